module outbound-webhooks/examples/receivers/go

go 1.26

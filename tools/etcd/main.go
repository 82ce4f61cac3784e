// Command etcd runs etcd's own main. `go install` of etcd fails because of
// replace directives in its go.mod; a dependency's replace directives are
// ignored, so this wrapper builds.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }

// Example receiver for outbound-webhooks (Kustomer-compatible) deliveries.
//
//	WEBHOOK_TOKEN=... go run .     (or WEBHOOK_TOKEN_FILE=/path/to/token)
//	WEBHOOK_TOKEN=new,previous ... (during a rotation: any listed token)
//
// Verifies the signatures over the raw body (401 unless one matches), answers
// 200, and processes each event id once: a redelivery of an id already seen is
// acknowledged with 200 but not processed again. Processing here is printing
// `verified <id> <name> org=<org>` to stdout. Go standard library only.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	maxBodyBytes     = 2 << 20 // events are at most 1 MiB
	maxRememberedIDs = 100000
)

// seenIDs holds the ids already processed, oldest first. A real receiver keeps
// them in its database, with the processing, for longer than the sender
// retries (about 80 minutes).
type seenIDs struct {
	mu    sync.Mutex
	ids   map[string]struct{}
	order []string
}

// firstTime records id and reports whether it was new (check and record in one step).
func (s *seenIDs) firstTime(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ids[id]; ok {
		return false
	}
	s.ids[id] = struct{}{}
	s.order = append(s.order, id)
	if len(s.order) > maxRememberedIDs {
		delete(s.ids, s.order[0])
		s.order = s.order[1:]
	}
	return true
}

type envelope struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Org  string `json:"org"`
}

// verifyRequest is the receiver's check: either header signed by one of tokens.
func verifyRequest(tokens []string, body []byte, h http.Header, now int64) bool {
	return VerifySignature(tokens, body, h.Get("X-Kustomer-Webhook-Signature")) ||
		VerifyStandardWebhooks(tokens, body, h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature"), now)
}

func handler(tokens []string, seen *seenIDs) http.Handler {
	var printMu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/healthz" {
			fmt.Fprintln(w, "ok")
			return
		}
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		// The raw bytes: never re-serialize before verifying.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
		if err != nil {
			http.Error(w, "body too large or unreadable", http.StatusRequestEntityTooLarge)
			return
		}
		if !verifyRequest(tokens, body, r.Header, time.Now().Unix()) {
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		var object map[string]json.RawMessage
		var ev envelope
		if json.Unmarshal(body, &object) != nil || object == nil || json.Unmarshal(body, &ev) != nil {
			http.Error(w, "body is not a JSON object", http.StatusBadRequest)
			return
		}
		id := r.Header.Get("webhook-id")
		if id == "" {
			id = ev.ID
		}
		if id == "" {
			http.Error(w, "no event id", http.StatusBadRequest)
			return
		}
		if !seen.firstTime(id) {
			fmt.Fprintln(w, "duplicate")
			return
		}
		printMu.Lock()
		fmt.Printf("verified %s %s org=%s\n", id, ev.Name, ev.Org)
		printMu.Unlock()
		fmt.Fprintln(w, "ok")
	})
}

// list splits a comma-separated value, so a rotation can give the new and the
// previous token.
func list(value string) []string {
	var items []string
	for _, item := range strings.Split(value, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	return items
}

func loadTokens() ([]string, error) {
	var tokens []string
	if t := os.Getenv("WEBHOOK_TOKEN"); t != "" {
		tokens = list(t)
	} else if paths := os.Getenv("WEBHOOK_TOKEN_FILE"); paths != "" {
		for _, path := range list(paths) {
			b, err := os.ReadFile(path)
			if err != nil {
				return nil, err
			}
			// A file written by hand usually ends with a newline; the token does not.
			tokens = append(tokens, strings.TrimRight(string(b), "\r\n"))
		}
	}
	if len(tokens) == 0 {
		return nil, errors.New("set WEBHOOK_TOKEN or WEBHOOK_TOKEN_FILE to the webhook signing token(s)")
	}
	return tokens, nil
}

func main() {
	log.SetOutput(os.Stderr)
	tokens, err := loadTokens()
	if err != nil {
		log.Print(err)
		os.Exit(2)
	}
	host := os.Getenv("HOST")
	if host == "" {
		host = "127.0.0.1"
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "3000"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "listening on http://%s\n", ln.Addr())
	srv := &http.Server{
		Handler:           handler(tokens, &seenIDs{ids: map[string]struct{}{}}),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

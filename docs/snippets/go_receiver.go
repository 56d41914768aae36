// A hookd receiver in Go, standard library only: go run go_receiver.go
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// verifySignature reports whether signatureHex (the X-Abstrakt-Signature header) is the
// HMAC-SHA256 of the raw body keyed with secret. hmac.Equal compares in constant time.
func verifySignature(secret, body []byte, signatureHex string) bool {
	received, err := hex.DecodeString(signatureHex)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(received, mac.Sum(nil))
}

type jobEvent struct {
	RequestID string          `json:"request_id"`
	Status    string          `json:"status"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     json.RawMessage `json:"error,omitempty"`
	Metrics   json.RawMessage `json:"metrics,omitempty"`
	Timestamp string          `json:"timestamp,omitempty"`
}

// processed holds the X-Abstrakt-Delivery values already handled. In production: a table with
// a unique key.
type processed struct {
	mu  sync.Mutex
	ids map[string]bool
}

// firstTime records id and reports whether it was new.
func (p *processed) firstTime(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ids[id] {
		return false
	}
	p.ids[id] = true
	return true
}

func writeJSON(w http.ResponseWriter, answer any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(answer)
}

func webhookHandler(secret []byte) http.HandlerFunc {
	seen := &processed{ids: map[string]bool{}}
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 5<<20))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			} else {
				http.Error(w, "cannot read body", http.StatusBadRequest)
			}
			return
		}
		if !verifySignature(secret, body, r.Header.Get("X-Abstrakt-Signature")) {
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		var event jobEvent
		if err := json.Unmarshal(body, &event); err != nil {
			http.Error(w, "invalid JSON", http.StatusBadRequest)
			return
		}
		if !seen.firstTime(r.Header.Get("X-Abstrakt-Delivery")) {
			// A retry of a delivery already handled: acknowledge it again, do nothing.
			writeJSON(w, map[string]any{"received": true, "duplicate": true})
			return
		}
		log.Printf("%s %s (%s)", r.Header.Get("X-Abstrakt-Event"), event.RequestID, event.Status)
		// Queue the work here and answer at once.
		writeJSON(w, map[string]any{"received": true, "request_id": event.RequestID})
	}
}

func main() {
	secret := os.Getenv("WEBHOOK_SECRET")
	if secret == "" {
		log.Fatal("WEBHOOK_SECRET is not set")
	}
	addr := os.Getenv("ADDR") // e.g. 127.0.0.1:3000, behind your HTTPS reverse proxy
	if addr == "" {
		addr = "127.0.0.1:3000"
	}
	mux := http.NewServeMux()
	mux.Handle("/webhook/abstrakt", webhookHandler([]byte(secret)))
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on %s", listener.Addr())
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(server.Serve(listener))
}

package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"strings"
)

// ToleranceSeconds is how far webhook-timestamp may be from now (Standard
// Webhooks): an older delivery is refused as a possible replay.
const ToleranceSeconds = 5 * 60

// VerifySignature reports whether signature (the X-Kustomer-Webhook-Signature
// header: lowercase hex HMAC-SHA256) signs body (the raw request body, exactly
// as received) with one of tokens (a token's UTF-8 bytes are the key; during
// a rotation a receiver holds the new and the previous token).
func VerifySignature(tokens []string, body []byte, signature string) bool {
	if !isLowerHex(signature, sha256.Size*2) {
		return false
	}
	received, err := hex.DecodeString(signature)
	if err != nil {
		return false
	}
	matched := false
	// Every token is tried, so the time does not tell which one matched.
	for _, token := range tokens {
		mac := hmac.New(sha256.New, []byte(token))
		mac.Write(body)
		// hmac.Equal compares in constant time.
		matched = hmac.Equal(mac.Sum(nil), received) || matched
	}
	return matched
}

// VerifyStandardWebhooks reports whether one `v1,` entry of signature (the
// webhook-signature header, space-separated entries) signs
// "{id}.{timestamp}.{body}" with one of tokens, and timestamp (Unix seconds)
// is within ToleranceSeconds of now.
func VerifyStandardWebhooks(tokens []string, body []byte, id, timestamp, signature string, now int64) bool {
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if id == "" || err != nil || ts < 0 {
		return false
	}
	if d := now - ts; d > ToleranceSeconds || d < -ToleranceSeconds {
		return false
	}
	var received [][]byte
	for _, entry := range strings.Split(signature, " ") {
		encoded, ok := strings.CutPrefix(entry, "v1,")
		if !ok {
			continue
		}
		if sig, err := base64.StdEncoding.DecodeString(encoded); err == nil && len(sig) == sha256.Size {
			received = append(received, sig)
		}
	}
	matched := false
	for _, token := range tokens {
		mac := hmac.New(sha256.New, []byte(token))
		mac.Write([]byte(id + "." + timestamp + "."))
		mac.Write(body)
		expected := mac.Sum(nil)
		for _, sig := range received {
			matched = hmac.Equal(expected, sig) || matched
		}
	}
	return matched
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

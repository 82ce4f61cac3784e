package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
)

// VerifySignature reports whether signature (the X-Kustomer-Webhook-Signature
// header: lowercase hex HMAC-SHA256) signs body (the raw request body, exactly
// as received) with token (its UTF-8 bytes are the key).
func VerifySignature(token string, body []byte, signature string) bool {
	if !isLowerHex(signature, sha256.Size*2) {
		return false
	}
	received, err := hex.DecodeString(signature)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write(body)
	// hmac.Equal compares in constant time.
	return hmac.Equal(mac.Sum(nil), received)
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

package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

type vectors struct {
	Cases []struct {
		Name       string `json:"name"`
		Token      string `json:"token"`
		Body       string `json:"body"`
		BodyBase64 string `json:"bodyBase64"`
		Signature  string `json:"signature"`
		Valid      bool   `json:"valid"`
	} `json:"cases"`
}

// TestSharedVectors checks VerifySignature against ../test-vectors.json.
func TestSharedVectors(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "test-vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Cases) < 5 {
		t.Fatalf("only %d cases", len(v.Cases))
	}
	for _, c := range v.Cases {
		t.Run(c.Name, func(t *testing.T) {
			body, err := base64.StdEncoding.DecodeString(c.BodyBase64)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal([]byte(c.Body), body) {
				t.Fatal("body and bodyBase64 differ")
			}
			if got := VerifySignature(c.Token, body, c.Signature); got != c.Valid {
				t.Fatalf("VerifySignature = %v, want %v", got, c.Valid)
			}
		})
	}
}

//go:build tools

// Package tools pins the promtool command the chart's alert tests build
// (`promtool check rules`, `promtool test rules`).
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"

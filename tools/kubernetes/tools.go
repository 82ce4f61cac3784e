//go:build tools

// Package tools pins the Kubernetes commands the test suite builds:
// kube-apiserver, kube-controller-manager (only its role-aggregation
// controller runs in the tests) and kubectl.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)

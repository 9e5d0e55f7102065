// Package archtest holds only tests: they enforce the import rules of docs/ARCHITECTURE.md
// §3 on the real package graph (go list), so a forbidden import fails `make test`.
package archtest

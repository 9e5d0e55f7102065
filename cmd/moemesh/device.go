package main

import (
	"fmt"

	"github.com/moemesh/moemesh/ascend"
)

// checkDevice fails early, naming the way out, when the binary lacks the backend asked
// for: the cann backend is compiled in only with -tags cann (device_cann.go).
func checkDevice(name string) error {
	if _, err := ascend.Open(name); err != nil {
		if name == "cann" {
			return fmt.Errorf("--device: %w; the cann backend needs a binary built with -tags cann (see docs/cann.md)", err)
		}
		return fmt.Errorf("--device: %w", err)
	}
	return nil
}

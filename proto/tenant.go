package proto

import (
	"fmt"
	"net/url"
	"strconv"
)

// FormatTenantPairs encodes the HeaderTenant value of an ExpertBatch that carries rows of
// several tenants: the (row, expert) pairs each tenant has in the batch, as a URL query
// ("acme=12&beta=3"), so any tenant id survives the trip.
func FormatTenantPairs(pairs map[string]int) string {
	v := url.Values{}
	for t, n := range pairs {
		v.Set(t, strconv.Itoa(n))
	}
	return v.Encode()
}

// ParseTenantPairs decodes FormatTenantPairs' output.
func ParseTenantPairs(s string) (map[string]int, error) {
	v, err := url.ParseQuery(s)
	if err != nil {
		return nil, fmt.Errorf("%w: header %s: %w", ErrDecode, HeaderTenant, err)
	}
	out := make(map[string]int, len(v))
	for t, ns := range v {
		n, err := strconv.Atoi(ns[len(ns)-1])
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%w: header %s: tenant %q has %q pairs", ErrDecode, HeaderTenant, t, ns[len(ns)-1])
		}
		out[t] = n
	}
	return out, nil
}

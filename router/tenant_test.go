package router

import (
	"context"
	"maps"
	"testing"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

// TestTenantHeader: a card's batch is charged per tenant by the step rows it holds; the
// rows of a micro-batch's call are offset by its first step row.
func TestTenantHeader(t *testing.T) {
	step := []string{"a", "a", "b", "b", "b", "c"} // tenant of each step row
	// Call rows 0 and 1 with 2 and 1 pairs.
	b := &proto.ExpertBatch{RowPtr: []int32{0, 2, 3}}
	rows := []int32{0, 1}
	cases := []struct {
		name  string
		ctx   context.Context
		want  map[string]int
		empty bool
	}{
		{"no tenants", context.Background(), nil, true},
		{"whole step", WithTenants(context.Background(), step), map[string]int{"a": 3}, false},
		{"second micro-batch", model.WithFirstRow(WithTenants(context.Background(), step), 1), map[string]int{"a": 2, "b": 1}, false},
		{"past the tenants", model.WithFirstRow(WithTenants(context.Background(), step), 5), map[string]int{"c": 2}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := tenantHeader(c.ctx, b, rows)
			if c.empty {
				if h != "" {
					t.Fatalf("header %q, want none", h)
				}
				return
			}
			got, err := proto.ParseTenantPairs(h)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, c.want) {
				t.Fatalf("header %q = %v, want %v", h, got, c.want)
			}
		})
	}
}

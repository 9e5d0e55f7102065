package router

import (
	"context"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

type tenantsKey struct{}

// WithTenants tells the Mesh whose tokens a step holds: tenants[i] owns the step's token
// row i. Each card's batch then carries its pairs per tenant in the Moe-Tenant header, so
// daemons account expert work to tenants.
func WithTenants(ctx context.Context, tenants []string) context.Context {
	return context.WithValue(ctx, tenantsKey{}, tenants)
}

// tenantHeader is the Moe-Tenant value for batch b whose row i is the call's token
// rows[i], or "" when ctx names no tenants. A micro-batch's call row r is step row
// model.FirstRow(ctx)+r.
func tenantHeader(ctx context.Context, b *proto.ExpertBatch, rows []int32) string {
	tenants, _ := ctx.Value(tenantsKey{}).([]string)
	if len(tenants) == 0 {
		return ""
	}
	first := model.FirstRow(ctx)
	pairs := map[string]int{}
	for i, tok := range rows {
		if r := first + int(tok); r < len(tenants) {
			pairs[tenants[r]] += int(b.RowPtr[i+1] - b.RowPtr[i])
		}
	}
	return proto.FormatTenantPairs(pairs)
}

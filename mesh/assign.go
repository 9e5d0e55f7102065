package mesh

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/moemesh/moemesh/proto"
)

// ErrBadAssign: an assignment in the registry does not decode or names another card.
var ErrBadAssign = errors.New("mesh: undecodable assignment")

// PutAssign writes a card's desired expert set (key proto.AssignKey). Assignments carry no
// TTL: they stay until the controller rewrites or deletes them. experts is stored sorted
// and without duplicates.
func (r *Registry) PutAssign(ctx context.Context, a *proto.Assignment) error {
	if a == nil {
		return errors.New("mesh: PutAssign: nil assignment")
	}
	norm := *a
	norm.V = proto.Version
	norm.Experts = slices.Clone(a.Experts)
	slices.SortFunc(norm.Experts, compareRef)
	norm.Experts = slices.CompactFunc(norm.Experts, func(x, y proto.ExpertRef) bool { return compareRef(x, y) == 0 })
	if err := norm.Validate(); err != nil {
		return fmt.Errorf("mesh: PutAssign: %w", err)
	}
	data, err := proto.Marshal(&norm)
	if err != nil {
		return err
	}
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	key := proto.AssignKey(a.Card)
	if _, err := r.kv.Put(ctx, key, data); err != nil {
		return fmt.Errorf("mesh: assignment %s: %w", key, err)
	}
	return nil
}

func compareRef(a, b proto.ExpertRef) int {
	if a.Layer != b.Layer {
		return int(a.Layer - b.Layer)
	}
	return int(a.Expert - b.Expert)
}

// GetAssign returns a card's assignment, or nil and no error when it has none.
func (r *Registry) GetAssign(ctx context.Context, cardID string) (*proto.Assignment, error) {
	if err := proto.ValidToken(cardID); err != nil {
		return nil, fmt.Errorf("mesh: GetAssign: %w", err)
	}
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	e, err := r.kv.Get(ctx, proto.AssignKey(cardID))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mesh: assignment of %s: %w", cardID, err)
	}
	return decodeAssign(e)
}

// DeleteAssign removes a card's assignment (the controller forgets a card that is gone).
func (r *Registry) DeleteAssign(ctx context.Context, cardID string) error {
	if err := proto.ValidToken(cardID); err != nil {
		return fmt.Errorf("mesh: DeleteAssign: %w", err)
	}
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	if err := r.kv.Purge(ctx, proto.AssignKey(cardID), jetstream.PurgeTTL(markerTTL)); err != nil {
		return fmt.Errorf("mesh: delete assignment of %s: %w", cardID, err)
	}
	return nil
}

// WatchAssign follows one card's assignment: fn(a) for every value written (the current
// one first, if any), fn(nil) once it is deleted or no longer decodes. fn runs on one
// goroutine, never concurrently. Like WatchCards it returns after the initial sync, runs
// until ctx is done and survives reconnects and server restarts.
func (r *Registry) WatchAssign(ctx context.Context, cardID string, fn func(a *proto.Assignment)) error {
	if fn == nil {
		return fmt.Errorf("%w: nil callback", ErrWatch)
	}
	if err := proto.ValidToken(cardID); err != nil {
		return fmt.Errorf("%w: %w", ErrWatch, err)
	}
	key := proto.AssignKey(cardID)
	return r.startWatch(ctx, &keyWatch{
		filter: key,
		idOf: func(k string) (string, bool) {
			return cardID, k == key
		},
		decode: func(e jetstream.KeyValueEntry) (any, error) { return decodeAssign(e) },
		put:    func(_ string, v any) { fn(v.(*proto.Assignment)) },
		del:    func(string) { fn(nil) },
	})
}

// WatchAssigns follows every card's assignment, as WatchCards follows leases.
func (r *Registry) WatchAssigns(ctx context.Context, fn func(cardID string, a *proto.Assignment)) error {
	if fn == nil {
		return fmt.Errorf("%w: nil callback", ErrWatch)
	}
	return r.startWatch(ctx, &keyWatch{
		filter: proto.AssignKeys(),
		idOf:   proto.CardIDFromAssignKey,
		decode: func(e jetstream.KeyValueEntry) (any, error) { return decodeAssign(e) },
		put:    func(id string, v any) { fn(id, v.(*proto.Assignment)) },
		del:    func(id string) { fn(id, nil) },
	})
}

func decodeAssign(e jetstream.KeyValueEntry) (*proto.Assignment, error) {
	id, _ := proto.CardIDFromAssignKey(e.Key())
	var a proto.Assignment
	if err := proto.DecodeAssignment(e.Value(), &a); err != nil {
		return nil, fmt.Errorf("%w %s (revision %d): %w", ErrBadAssign, e.Key(), e.Revision(), err)
	}
	if a.Card != id {
		return nil, fmt.Errorf("%w %s (revision %d): it is for card %q", ErrBadAssign, e.Key(), e.Revision(), a.Card)
	}
	return &a, nil
}

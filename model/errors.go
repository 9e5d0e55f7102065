package model

import "errors"

// Sentinel errors, wrapped with detail by the functions that return them.
var (
	ErrConfig      = errors.New("model: bad config")
	ErrUnsupported = errors.New("model: unsupported")
	ErrRouting     = errors.New("model: bad routing")
	ErrMissing     = errors.New("model: tensor missing")
	ErrNotLoaded   = errors.New("model: expert not loaded")
	// ErrShape: a checkpoint tensor's shape disagrees with config.json.
	ErrShape = errors.New("model: tensor shape does not match config")
)

package deepseek4

import "errors"

// ErrShape: arguments of a compute function whose lengths disagree.
var ErrShape = errors.New("deepseek4: shape mismatch")

// Package proto is the moemesh wire protocol: message bodies (msgpack, structs encoded as
// arrays, new fields only ever appended), NATS subjects and KV keys (built here and nowhere
// else), header names, error codes and the protocol version.
//
// Tensors travel as dtype + shape + raw little-endian bytes in a msgpack bin, never as arrays
// of numbers; integer and float index arrays likewise (I32s, F32s). Every decoder checks what
// it reads: a malformed or truncated message is an error, never a panic.
//
// Import rule: proto imports only the standard library and vmihailenco/msgpack.
package proto

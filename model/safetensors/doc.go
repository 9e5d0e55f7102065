// Package safetensors reads and writes Hugging Face safetensors checkpoints: single files,
// sharded directories with model.safetensors.index.json, every dtype of the format, and
// the block-scaled FP8/FP4 layouts of DeepSeek checkpoints.
//
// Reading maps each file read-only (mmap on unix, ReadAt elsewhere), so a caller that
// needs one expert's rows of a 100 GB checkpoint touches only those pages: Raw and Rows
// return views into the mapping, F32 and RowsF32 decode (and dequantise) into new slices.
// Every rule of the format is checked at open time, so a malformed file is refused with
// an error naming the file and the problem (wrapping ErrFormat) instead of surfacing later
// as a wrong tensor or a panic. A mapped file must not be truncated or rewritten in place
// while open (reading a vanished page faults); writers here only ever rename new files in.
//
// Writing follows the reference writer byte for byte (header padded with spaces to a
// multiple of 8, tensors ordered by descending dtype alignment then name) and publishes
// each file by renaming a fully written temporary file, so no half-written file appears.
//
// Import rule: the standard library and golang.org/x/sys only; this package knows nothing
// about models (tensor naming lives in package model).
package safetensors

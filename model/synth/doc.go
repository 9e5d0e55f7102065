// Package synth writes random-weight checkpoints in the exact Hugging Face layout of a
// family, for tests, benchmarks and the built-in model.
//
// A checkpoint is what a user would download: config.json with the family's full key
// set, generation_config.json, and every tensor of the model under its real name and
// shape in sharded safetensors files with a model.safetensors.index.json. Loaders are
// therefore exercised on the same layout as real checkpoints (models.md §1–2, §5), only
// with MB-sized dimensions.
//
// Weights are drawn from a seeded generator per tensor (seed and tensor name), so the same
// Options give byte-identical files, and a bf16 checkpoint holds exactly the bf16
// rounding of the f32 one with the same seed. Linear weights are near-normal with
// variance 1/fan_in so activations stay O(1) through the layers; norm weights are ~1.
//
// Write refuses to overwrite anything but an empty directory or a previous synth
// checkpoint (recognised by MarkerFile), and builds the new checkpoint beside the target
// before renaming it into place. Tokenizer files are not written here.
//
// Imports model, model/safetensors and the standard library only.
package synth

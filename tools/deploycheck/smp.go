package main

import (
	"fmt"
	"reflect"
	"strings"
)

// strategicMerge applies a strategic merge patch (what kustomize and kubectl apply for a
// patch file) to orig, both as decoded JSON, for an object of Go type t. Lists merge by
// the key their struct tags name (patchStrategy:"merge" patchMergeKey:"..."), exactly the
// tags apimachinery's strategicpatch reads; other lists and scalars are replaced, and null
// deletes. $patch directives are refused rather than half-applied.
//
// Why not apimachinery's strategicpatch: it pulls kube-openapi, gnostic and protobuf (70
// packages, about half of this tool's build) for the few PodSpec fields the overlay patches.
func strategicMerge(orig, patch any, t reflect.Type) (any, error) {
	return merge(orig, patch, t, "", "")
}

func merge(orig, patch any, t reflect.Type, strategy, key string) (any, error) {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch p := patch.(type) {
	case map[string]any:
		if _, ok := p["$patch"]; ok {
			return nil, fmt.Errorf("$patch directives are not supported")
		}
		o, ok := orig.(map[string]any)
		if !ok {
			return patch, nil
		}
		out := make(map[string]any, len(o))
		for k, v := range o {
			out[k] = v
		}
		for k, v := range p {
			if v == nil {
				delete(out, k)
				continue
			}
			ft, fstrategy, fkey, err := fieldOf(t, k)
			if err != nil {
				return nil, err
			}
			if cur, ok := out[k]; ok {
				m, err := merge(cur, v, ft, fstrategy, fkey)
				if err != nil {
					return nil, fmt.Errorf("%s.%w", k, err)
				}
				out[k] = m
			} else {
				out[k] = v
			}
		}
		return out, nil
	case []any:
		o, ok := orig.([]any)
		if !ok || !strings.Contains(strategy, "merge") {
			return patch, nil
		}
		if key == "" { // a merged list of scalars: the union, in order
			out := append([]any{}, o...)
			for _, v := range p {
				if !containsValue(out, v) {
					out = append(out, v)
				}
			}
			return out, nil
		}
		out := append([]any{}, o...)
		for _, pv := range p {
			pm, ok := pv.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("list merged by %s has a %T element", key, pv)
			}
			i := indexByKey(out, key, pm[key])
			if i < 0 {
				out = append(out, pv)
				continue
			}
			m, err := merge(out[i], pv, t.Elem(), "", "")
			if err != nil {
				return nil, fmt.Errorf("[%s=%v].%w", key, pm[key], err)
			}
			out[i] = m
		}
		return out, nil
	}
	return patch, nil
}

// fieldOf finds the JSON field name of struct type t (through inline embedded structs)
// and returns its type and patch tags; map types give their element type.
func fieldOf(t reflect.Type, name string) (reflect.Type, string, string, error) {
	if t == nil {
		return nil, "", "", nil
	}
	switch t.Kind() {
	case reflect.Map:
		return t.Elem(), "", "", nil
	case reflect.Struct:
	default:
		return nil, "", "", nil
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "" && f.Anonymous {
			if ft, s, k, err := fieldOf(f.Type, name); err == nil && ft != nil {
				return ft, s, k, nil
			}
			continue
		}
		if tag == name {
			return f.Type, f.Tag.Get("patchStrategy"), f.Tag.Get("patchMergeKey"), nil
		}
	}
	return nil, "", "", fmt.Errorf("%s: no such field in %s", name, t)
}

func indexByKey(list []any, key string, value any) int {
	for i, e := range list {
		if m, ok := e.(map[string]any); ok && reflect.DeepEqual(m[key], value) {
			return i
		}
	}
	return -1
}

func containsValue(list []any, v any) bool {
	for _, e := range list {
		if reflect.DeepEqual(e, v) {
			return true
		}
	}
	return false
}

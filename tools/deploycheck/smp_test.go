package main

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// The merge follows the struct tags as kubectl does: containers by name, volume mounts by
// mount path, ports by container port; args and other untagged lists are replaced.
func TestStrategicMerge(t *testing.T) {
	const orig = `{"metadata":{"name":"d","labels":{"a":"1","b":"2"}},"spec":{"template":{"spec":{
		"containers":[{"name":"c","image":"x","args":["run","--device=cpu"],
			"ports":[{"containerPort":80,"name":"http"}],
			"volumeMounts":[{"name":"data","mountPath":"/data"}]},
			{"name":"side","image":"y"}],
		"volumes":[{"name":"data","emptyDir":{}}]}}}}`
	for _, tc := range []struct {
		name, patch, want string // want: the merged JSON, or an error's text
	}{
		{"container by name, args replaced, mount added", `{"spec":{"template":{"spec":{"containers":[{"name":"c","args":["run","--device=cann"],"volumeMounts":[{"name":"drv","mountPath":"/drv"}]}]}}}}`,
			`{"metadata":{"labels":{"a":"1","b":"2"},"name":"d"},"spec":{"template":{"spec":{"containers":[{"args":["run","--device=cann"],"image":"x","name":"c","ports":[{"containerPort":80,"name":"http"}],"volumeMounts":[{"mountPath":"/data","name":"data"},{"mountPath":"/drv","name":"drv"}]},{"image":"y","name":"side"}],"volumes":[{"emptyDir":{},"name":"data"}]}}}}`},
		{"same mount path merges", `{"spec":{"template":{"spec":{"containers":[{"name":"c","volumeMounts":[{"mountPath":"/data","readOnly":true}]}]}}}}`,
			`{"metadata":{"labels":{"a":"1","b":"2"},"name":"d"},"spec":{"template":{"spec":{"containers":[{"args":["run","--device=cpu"],"image":"x","name":"c","ports":[{"containerPort":80,"name":"http"}],"volumeMounts":[{"mountPath":"/data","name":"data","readOnly":true}]},{"image":"y","name":"side"}],"volumes":[{"emptyDir":{},"name":"data"}]}}}}`},
		{"new container and volume appended, null deletes", `{"metadata":{"labels":{"b":null}},"spec":{"template":{"spec":{"containers":[{"name":"new","image":"z"}],"volumes":[{"name":"drv","hostPath":{"path":"/drv"}}]}}}}`,
			`{"metadata":{"labels":{"a":"1"},"name":"d"},"spec":{"template":{"spec":{"containers":[{"args":["run","--device=cpu"],"image":"x","name":"c","ports":[{"containerPort":80,"name":"http"}],"volumeMounts":[{"mountPath":"/data","name":"data"}]},{"image":"y","name":"side"},{"image":"z","name":"new"}],"volumes":[{"emptyDir":{},"name":"data"},{"hostPath":{"path":"/drv"},"name":"drv"}]}}}}`},
		{"directive refused", `{"spec":{"template":{"spec":{"containers":[{"name":"c","$patch":"delete"}]}}}}`, "$patch directives are not supported"},
		{"unknown field refused", `{"spec":{"template":{"spec":{"contianers":[]}}}}`, "contianers: no such field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o, p any
			if err := json.Unmarshal([]byte(orig), &o); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tc.patch), &p); err != nil {
				t.Fatal(err)
			}
			got, err := strategicMerge(o, p, reflect.TypeOf(&appsv1.Deployment{}))
			if err != nil {
				if !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want %q", err, tc.want)
				}
				return
			}
			b, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Fatalf("merged\n%s\nwant\n%s", b, tc.want)
			}
		})
	}
}

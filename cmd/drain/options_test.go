package main

import (
	"reflect"
	"testing"

	"github.com/prometheus-streams/prometheus-streams/config"
)

// TestTrustedKeysCopyEveryField: each field of a trust entry reaches the drain, so that
// a key added to the config's trust section cannot be left out of the mapping.
func TestTrustedKeysCopyEveryField(t *testing.T) {
	p := &config.TrustedPublisher{
		PublicKey: "U1", Jobs: []string{"j"}, Instances: []string{"i.*"},
		Publishers: []string{"p"}, Sites: []string{"s"}, Labels: map[string]string{"a": "b"},
	}
	src := reflect.ValueOf(p).Elem()
	for i := range src.NumField() {
		if src.Field(i).IsZero() {
			t.Fatalf("test entry leaves %s unset", src.Type().Field(i).Name)
		}
	}
	keys := trustedKeys([]*config.TrustedPublisher{p, nil})
	if len(keys) != 2 || keys[1] != nil {
		t.Fatalf("keys = %v", keys)
	}
	dst := reflect.ValueOf(keys[0]).Elem()
	for i := range src.NumField() {
		name := src.Type().Field(i).Name
		f := dst.FieldByName(name)
		if !f.IsValid() || !reflect.DeepEqual(f.Interface(), src.Field(i).Interface()) {
			t.Errorf("%s not copied", name)
		}
	}
}

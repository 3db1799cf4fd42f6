package main

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus-streams/prometheus-streams/config"
)

// TestChangedSeesEveryKey: a change to any top-level key of the config is seen by
// changed, so a reload either applies it or reports it as waiting for a restart; none
// can be forgotten as remote_write once was.
func TestChangedSeesEveryKey(t *testing.T) {
	typ := reflect.TypeOf(config.Config{})
	n := 0
	for i := range typ.NumField() {
		f := typ.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "" || key == "-" || !f.IsExported() {
			continue
		}
		n++
		a, b := &config.Config{}, &config.Config{}
		v := reflect.ValueOf(b).Elem().Field(i)
		switch v.Kind() {
		case reflect.Bool:
			v.SetBool(true)
		case reflect.String:
			v.SetString("x")
		case reflect.Int, reflect.Int64:
			v.SetInt(7)
		case reflect.Pointer:
			v.Set(reflect.New(v.Type().Elem()))
		case reflect.Slice:
			v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		case reflect.Map:
			v.Set(reflect.MakeMap(v.Type()))
			v.SetMapIndex(reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem())
		default:
			t.Fatalf("key %s: kind %s not covered by the test", key, v.Kind())
		}
		if got := changed(a, b); !slices.Equal(got, []string{key}) {
			t.Errorf("a change of %s: changed = %v", key, got)
		}
	}
	if n < 20 {
		t.Errorf("only %d keys seen", n)
	}
	for _, key := range []string{"remote_write", "receiver_stream", "push_gateway", "expose", "max_age"} {
		if appliedAtOnce[key] || edgeOnly[key] {
			t.Errorf("%s must be reported as taking effect at the next restart", key)
		}
	}
}

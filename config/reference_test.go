package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestREADMEReference checks the README's configuration reference against the schema:
// every key the code reads is documented, so the reference cannot drift from the code.
func TestREADMEReference(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	start := strings.Index(string(readme), "## Configuration reference")
	if start < 0 {
		t.Fatal("README has no Configuration reference section")
	}
	ref := string(readme[start:])
	if end := strings.Index(ref[3:], "\n## "); end >= 0 {
		ref = ref[:end+3]
	}
	for _, key := range yamlKeys(reflect.TypeOf(Config{}), "") {
		// A key is documented as `section.key`, or in its section's table as `key` or
		// `subsection.key`: any dotted suffix of its path.
		documented := false
		for rest := key; rest != "" && !documented; {
			documented = strings.Contains(ref, "`"+rest+"`")
			_, rest, _ = strings.Cut(rest, ".")
		}
		if !documented {
			t.Errorf("config key %s is not in the README's configuration reference", key)
		}
	}
}

// yamlKeys lists the dotted yaml keys of a struct type, leaving out inlined structs
// (Prometheus's HTTP client settings, documented as such) and fields not read from YAML.
func yamlKeys(typ reflect.Type, prefix string) []string {
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
		typ = typ.Elem()
	}
	if typ.Kind() != reflect.Struct || typ.PkgPath() != reflect.TypeOf(Config{}).PkgPath() {
		return nil
	}
	var keys []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || strings.Contains(opts, "inline") || !f.IsExported() {
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		if sub := yamlKeys(f.Type, key); len(sub) > 0 {
			keys = append(keys, sub...) // a section: its keys are what is documented
		} else {
			keys = append(keys, key)
		}
	}
	return keys
}

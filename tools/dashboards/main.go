// Command dashboards writes the Grafana dashboards of prometheus-streams, ready to import:
// the drain (the central side's health) and the fleet (targets and publishers as the drain
// sees them). They are code so that every query is checked against what the drain serves
// (tests/dashboards_test.go runs each one against a real Prometheus scraping a real drain).
//
//	go run ./tools/dashboards [-out config/grafana]    write the JSON files (make dashboards)
//	go run ./tools/dashboards -panels                  print the panels as a markdown table
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

func main() {
	out := flag.String("out", "config/grafana", "directory to write the dashboards to")
	panels := flag.Bool("panels", false, "print the panels and the question each answers, as markdown, instead")
	flag.Parse()
	if *panels {
		writePanels(os.Stdout)
		return
	}
	files, err := render()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dashboards:", err)
		os.Exit(1)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(*out, name), b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "dashboards:", err)
			os.Exit(1)
		}
	}
}

// render returns each dashboard's file name and JSON.
func render() (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, d := range dashboards {
		built, err := d.build().Build()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.uid, err)
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false) // PromQL's < and > stay readable
		if err := enc.Encode(built); err != nil {
			return nil, fmt.Errorf("%s: %w", d.uid, err)
		}
		files[d.uid+".json"] = buf.Bytes()
	}
	return files, nil
}

// A board is one dashboard: rows of panels.
type board struct {
	uid, title, about string
	rows              []row
}

type row struct {
	title  string
	panels []panel
}

// A panel answers one question an operator asks.
type panel struct {
	title, question string
	kind            kind
	unit            string
	queries         []query
}

type query struct{ expr, legend string }

type kind int

const (
	graph  kind = iota // a time series
	single             // a stat: the value now
	list               // a table of the series now, one row each
)

var datasource = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

func (b board) build() *dashboard.DashboardBuilder {
	d := dashboard.NewDashboardBuilder(b.title).
		Uid(b.uid).
		Description(b.about).
		Tags([]string{"prometheus-streams"}).
		Editable().
		Refresh("1m").
		Time("now-6h", "now").
		Timezone(common.TimeZoneBrowser).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").Label("Data source").Type("prometheus"))
	for _, other := range dashboards {
		if other.uid != b.uid {
			d = d.Link(dashboard.NewDashboardLinkBuilder(other.title).Type(dashboard.DashboardLinkTypeLink).
				Url("/d/" + other.uid).KeepTime(true).Icon("dashboard"))
		}
	}
	for _, r := range b.rows {
		d = d.WithRow(dashboard.NewRowBuilder(r.title))
		for _, p := range r.panels {
			d = d.WithPanel(p.build())
		}
	}
	return d
}

func (p panel) build() cog.Builder[dashboard.Panel] {
	targets := make([]cog.Builder[variants.Dataquery], len(p.queries))
	for i, q := range p.queries {
		t := prometheus.NewDataqueryBuilder().Expr(q.expr).LegendFormat(q.legend).RefId(string(rune('A' + i)))
		switch p.kind {
		case single:
			t = t.Instant()
		case list:
			t = t.Instant().Format(prometheus.PromQueryFormatTable)
		}
		targets[i] = t
	}
	switch p.kind {
	case single:
		b := stat.NewPanelBuilder().Title(p.title).Description(p.question).Datasource(datasource).
			Unit(p.unit).Height(5).Span(6)
		for _, t := range targets {
			b = b.WithTarget(t)
		}
		return b
	case list:
		b := table.NewPanelBuilder().Title(p.title).Description(p.question).Datasource(datasource).
			Unit(p.unit).Height(8).Span(12)
		for _, t := range targets {
			b = b.WithTarget(t)
		}
		return b
	default:
		b := timeseries.NewPanelBuilder().Title(p.title).Description(p.question).Datasource(datasource).
			Unit(p.unit).Height(8).Span(12)
		for _, t := range targets {
			b = b.WithTarget(t)
		}
		return b
	}
}

// writePanels prints each dashboard's panels and the question each answers (README).
func writePanels(w io.Writer) {
	for _, b := range dashboards {
		fmt.Fprintf(w, "**%s** (`config/grafana/%s.json`)\n\n| panel | answers |\n|---|---|\n", b.title, b.uid)
		for _, r := range b.rows {
			for _, p := range r.panels {
				fmt.Fprintf(w, "| %s | %s |\n", p.title, strings.ReplaceAll(p.question, "|", `\|`))
			}
		}
		fmt.Fprintln(w)
	}
}

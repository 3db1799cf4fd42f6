// Package exposition turns a scraped exposition into labelled metric families, as a
// Prometheus scrape would label them.
//
// It is the sink-independent part of the drain: Parse decodes an exposition body into
// client_model metric families, Attach adds the target's job, instance and static
// labels with Prometheus's honor_labels rules, StripTimestamps drops sample timestamps
// for sinks that refuse them, and Health builds the scrape-health families every sink
// shows for a target.
//
// # Family names
//
// A family is named as the text format (0.0.4) names it, so that an exposition and the
// same registry served as OpenMetrics yield the same families, and so that a family
// written back out in the text format has the sample names Prometheus would have
// stored from the original scrape:
//
//   - An OpenMetrics counter family `foo` (samples `foo_total`, `foo_created`) becomes
//     the COUNTER family `foo_total`. client_golang (common/expfmt) writes a counter
//     `foo_total` as `# TYPE foo counter` with `foo_total` samples, and a counter
//     without the suffix as `unknown`, so the two formats agree for every
//     client_golang registry. An exposition whose counter samples carry no suffix
//     (`# TYPE foo counter`, `foo 1`), which Prometheus accepts, keeps the sample name
//     `foo`.
//   - An OpenMetrics info family `foo` (samples `foo_info`) becomes the GAUGE family
//     `foo_info` (value 1): the text format has no info type, and a gauge `*_info` is
//     its convention for the same thing.
//   - A stateset family becomes a GAUGE family of the same name, one metric per state
//     (the state is the label named after the family, value 1 or 0), as Prometheus
//     stores it.
//   - A gaugehistogram family becomes GAUGE_HISTOGRAM: buckets as for a histogram,
//     `_gcount` and `_gsum` as its count and sum. The text encoder writes it as a
//     histogram.
//   - unknown becomes UNTYPED; gauge, histogram and summary keep their type.
//
// OpenMetrics carries what the text format cannot: UNIT lines (MetricFamily.Unit),
// `_created` samples (CreatedTimestamp of a counter, histogram or summary), and
// exemplars, kept on counters and on histogram and gauge histogram buckets, the only
// places a classic client_model metric has room for one (an exemplar elsewhere is
// dropped).
package exposition

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
)

// Errors Parse returns, wrapped with what is wrong and where.
var (
	// ErrInvalid marks a body that cannot be decoded, or one of a media type this
	// package does not read: either way the message cannot be turned into families.
	ErrInvalid = errors.New("invalid exposition")
	// ErrUnsupported marks a Content-Type other than the text format and OpenMetrics.
	// Errors that wrap it wrap ErrInvalid too.
	ErrUnsupported = errors.New("unsupported Content-Type")
)

// Media types Parse reads; parameters (version, charset, escaping) are not consulted,
// as the edge, which validated the body with the same parsers, does not consult them.
const (
	TextType        = "text/plain"
	OpenMetricsType = "application/openmetrics-text"
)

// Parse decodes body of the given Content-Type into metric families, sorted by name,
// with the labels of every metric sorted by name. An empty Content-Type means the text
// format, as in Prometheus 2.
//
// Both formats are read by Prometheus's own parsers (model/textparse), which the
// edge validated the body with and Prometheus's scrape loop uses: in time linear in the
// body, where expfmt's text parser is quadratic in the labels of a series. The samples
// are assembled into families as the package documentation describes; on text bodies
// this gives exactly the families expfmt gives (TestTextParsersAgree). Every error
// wraps ErrInvalid and says what is wrong, with the line where the parser knows it.
//
// A protobuf body's families are read as they are, native histograms included
// (ParseScrape applies a scrape's histogram settings).
func Parse(body []byte, contentType string) ([]*dto.MetricFamily, error) {
	return ParseScrape(body, contentType, Histograms{Native: true, AlwaysClassic: true})
}

// mediaType reduces a Content-Type to the formats Parse reads. It mirrors the edge's
// check (edge/scrape) so that whatever the edge accepted the drain can read.
func mediaType(contentType string) (string, error) {
	if contentType == "" {
		return TextType, nil
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return "", fmt.Errorf("%w: %w %q: %v", ErrInvalid, ErrUnsupported, contentType, err)
	}
	switch mt {
	case TextType, OpenMetricsType, ProtoType:
		return mt, nil
	}
	return "", fmt.Errorf("%w: %w %q: want OpenMetrics, the text format or Prometheus's protobuf format", ErrInvalid, ErrUnsupported, contentType)
}

// parseText reads the text format (0.0.4) with Prometheus's parser.
func parseText(body []byte) ([]*dto.MetricFamily, error) {
	a := newAssembler(textparse.NewPromParser(body, labels.NewSymbolTable(), false), body)
	if err := a.run(); err != nil {
		return nil, err
	}
	return a.families(), nil
}

// sortFamilies sorts families by name; it checks first because an exposition nearly
// always lists them sorted already (client_golang writes them so).
func sortFamilies(fams []*dto.MetricFamily) {
	compare := func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) }
	if !slices.IsSortedFunc(fams, compare) {
		slices.SortFunc(fams, compare)
	}
}

// sortLabels sorts label pairs by name in place; it checks first because they nearly
// always are sorted already (client_golang writes them so).
func sortLabels(ls []*dto.LabelPair) {
	if !labelsSorted(ls) {
		slices.SortStableFunc(ls, compareLabels)
	}
}

func labelsSorted(ls []*dto.LabelPair) bool {
	for i := 1; i < len(ls); i++ {
		if ls[i-1].GetName() > ls[i].GetName() {
			return false
		}
	}
	return true
}

func compareLabels(a, b *dto.LabelPair) int {
	return strings.Compare(a.GetName(), b.GetName())
}

// Encode writes families in the given format, closing the format where it needs it
// (the `# EOF` of OpenMetrics). Names are escaped as the format's escaping parameter
// says (expfmt's NewEncoder); options are expfmt's OpenMetrics options, such as
// expfmt.WithCreatedLines.
func Encode(w io.Writer, fams []*dto.MetricFamily, format expfmt.Format, options ...expfmt.EncoderOption) error {
	if format.FormatType() == expfmt.TypeUnknown {
		// expfmt.NewEncoder panics on a format it does not know.
		return fmt.Errorf("encode: unknown format %q", format)
	}
	enc := expfmt.NewEncoder(w, format, options...)
	for _, mf := range fams {
		if err := enc.Encode(mf); err != nil {
			return fmt.Errorf("encode family %q: %w", mf.GetName(), err)
		}
	}
	if c, ok := enc.(expfmt.Closer); ok {
		if err := c.Close(); err != nil {
			return fmt.Errorf("encode: %w", err)
		}
	}
	return nil
}

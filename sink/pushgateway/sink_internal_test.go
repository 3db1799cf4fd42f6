package pushgateway

import (
	"testing"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// TestForGatewayLeavesSharedFamiliesAlone: the families a sink receives are shared with
// the other sinks, which keep sample timestamps; forGateway must copy before it strips
// or escapes, also for metrics whose labels need no escaping in a family whose name does.
func TestForGatewayLeavesSharedFamiliesAlone(t *testing.T) {
	gauge := dto.MetricType_GAUGE
	shared := []*dto.MetricFamily{
		{Name: proto.String("my.metric"), Type: &gauge, Metric: []*dto.Metric{
			{Label: []*dto.LabelPair{{Name: proto.String("job"), Value: proto.String("j")}}, Gauge: &dto.Gauge{Value: proto.Float64(1)}, TimestampMs: proto.Int64(1700000000000)},
		}},
		{Name: proto.String("plain"), Type: &gauge, Metric: []*dto.Metric{
			{Gauge: &dto.Gauge{Value: proto.Float64(2)}, TimestampMs: proto.Int64(1700000000000)},
		}},
	}
	out, drops := forGateway(shared)
	if len(drops) > 0 {
		t.Errorf("dropped %v", drops)
	}
	if out[0].GetName() != "my_metric" || out[1].GetName() != "plain" {
		t.Errorf("names %q %q", out[0].GetName(), out[1].GetName())
	}
	for i, f := range out {
		if f.Metric[0].TimestampMs != nil {
			t.Errorf("family %d keeps its timestamp", i)
		}
		if shared[i].Metric[0].GetTimestampMs() != 1700000000000 {
			t.Errorf("family %d: the shared metric lost its timestamp", i)
		}
	}
	if shared[0].GetName() != "my.metric" {
		t.Error("the shared family was renamed")
	}
}

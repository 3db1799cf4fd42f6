package main

// rate is Grafana's rate window: at least four scrapes of the data source.
const rate = "[$__rate_interval]"

// The dashboards. Every metric name here is one the drain serves, or a sink's scrape
// health (streams_scrape_*); tests/dashboards_test.go runs every expression.
var dashboards = []board{
	{
		uid:   "prometheus-streams-drain",
		title: "prometheus-streams / drain",
		about: "The central side: is the drain subscribed, how far behind is it, what happens to each message, is every sink taking its scrapes.",
		rows: []row{{
			title: "Stream",
			panels: []panel{
				{title: "Subscribed", kind: single, unit: "none",
					question: "Is every drain subscribed to its receiver streams? (1 yes, 0 no: see /healthz and the drain's status line)",
					queries:  []query{{`min by (instance) (prometheus_streams_drain_stream_connected)`, "{{instance}}"}}},
				{title: "Targets heard from", kind: single, unit: "none",
					question: "How many targets has the drain heard from within max_age?",
					queries:  []query{{`sum(prometheus_streams_drain_targets)`, "targets"}}},
				{title: "Delivery lag p99", kind: single, unit: "s",
					question: "How far behind the edges is delivery now (p99 of scrape start to delivery, over 5m)?",
					queries:  []query{{`histogram_quantile(0.99, sum by (le) (rate(prometheus_streams_drain_delivery_lag_seconds_bucket[5m])))`, "p99"}}},
				{title: "Running version", kind: single, unit: "none",
					question: "Which version does each drain run?",
					queries:  []query{{`count by (version) (prometheus_streams_build_info)`, "{{version}}"}}},
				{title: "Messages received", unit: "ops",
					question: "How many messages per second arrive, from which stream (redeliveries included)?",
					queries:  []query{{`sum by (stream) (rate(prometheus_streams_drain_messages_received_total` + rate + `))`, "{{stream}}"}}},
				{title: "Delivery lag", unit: "s",
					question: "How long from a scrape at the edge to its delivery, p50 and p99? (alert StreamsDrainDeliveryLagHigh)",
					queries: []query{
						{`histogram_quantile(0.5, sum by (le) (rate(prometheus_streams_drain_delivery_lag_seconds_bucket` + rate + `)))`, "p50"},
						{`histogram_quantile(0.99, sum by (le) (rate(prometheus_streams_drain_delivery_lag_seconds_bucket` + rate + `)))`, "p99"},
					}},
			},
		}, {
			title: "Messages by fate",
			panels: []panel{
				{title: "Fates", unit: "ops",
					question: "What becomes of the messages: delivered to each sink, superseded by a newer scrape, expired past max_age, rejected as bad?",
					queries: []query{
						{`sum by (sink) (rate(prometheus_streams_drain_scrapes_delivered_total` + rate + `))`, "delivered to {{sink}}"},
						{`sum(rate(prometheus_streams_drain_messages_superseded_total` + rate + `))`, "superseded"},
						{`sum(rate(prometheus_streams_drain_messages_expired_total` + rate + `))`, "expired"},
						{`sum(rate(prometheus_streams_drain_messages_rejected_total` + rate + `))`, "rejected"},
					}},
				{title: "Rejected messages by reason", unit: "ops",
					question: "Why are messages refused as permanently bad (garbage, unknown version, bad signature, clock ahead)? (alert StreamsDrainMessagesRejected)",
					queries:  []query{{`sum by (reason) (rate(prometheus_streams_drain_messages_rejected_total` + rate + `))`, "{{reason}}"}}},
				{title: "Expired and superseded, last hour", kind: single, unit: "none",
					question: "How many messages were given up unread in the last hour: expired (the drain or a sink was down past max_age) or superseded?",
					queries: []query{
						{`sum(increase(prometheus_streams_drain_messages_expired_total[1h]))`, "expired"},
						{`sum(increase(prometheus_streams_drain_messages_superseded_total[1h]))`, "superseded"},
					}},
			},
		}, {
			title: "Sinks",
			panels: []panel{
				{title: "Sink errors and retries", unit: "ops",
					question: "Is a sink refusing scrapes (not retried) or failing transiently (retried), and are acks failing? (alert StreamsSinkRejectsScrapes)",
					queries: []query{
						{`sum by (sink) (rate(prometheus_streams_drain_scrapes_rejected_total` + rate + `))`, "rejected by {{sink}}"},
						{`sum(rate(prometheus_streams_drain_delivery_retries_total` + rate + `))`, "retries"},
						{`sum(rate(prometheus_streams_drain_ack_errors_total` + rate + `))`, "ack errors"},
					}},
				{title: "Sink latency p99", unit: "s",
					question: "How long does each sink take to take one scrape (p99)?",
					queries:  []query{{`histogram_quantile(0.99, sum by (le, sink) (rate(prometheus_streams_drain_sink_request_duration_seconds_bucket` + rate + `)))`, "{{sink}}"}}},
				{title: "Remote-write throughput", unit: "short",
					question: "How many samples per second go to each remote-write receiver, in how many requests, answered with which status?",
					queries: []query{
						{`sum by (remote) (rate(prometheus_streams_remote_write_samples_total` + rate + `))`, "samples/s to {{remote}}"},
						{`sum by (remote, code) (rate(prometheus_streams_remote_write_requests_total` + rate + `))`, "requests/s to {{remote}}: {{code}}"},
					}},
				{title: "Remote-write request latency p99", unit: "s",
					question: "How long does each remote-write receiver take to answer (p99)?",
					queries:  []query{{`histogram_quantile(0.99, sum by (le, remote) (rate(prometheus_streams_remote_write_request_duration_seconds_bucket` + rate + `)))`, "{{remote}}"}}},
			},
		}},
	},
	{
		uid:   "prometheus-streams-fleet",
		title: "prometheus-streams / fleet",
		about: "The edges as the drain sees them: which targets are up or down, how long and how large their scrapes are, which publishers went quiet, whose clock is off.",
		rows: []row{{
			title: "Targets",
			panels: []panel{
				{title: "Targets up", kind: single, unit: "none",
					question: "How many targets did their edge scrape successfully last time?",
					queries:  []query{{`sum(streams_scrape_up)`, "up"}}},
				{title: "Targets down", kind: single, unit: "none",
					question: "How many targets could their edge not scrape last time? (alert StreamsTargetScrapeFailing)",
					queries:  []query{{`count(streams_scrape_up == 0) or vector(0)`, "down"}}},
				{title: "Targets up and down by job", unit: "none",
					question: "Which jobs have targets up, which down?",
					queries: []query{
						{`sum by (job) (streams_scrape_up)`, "{{job}} up"},
						{`count by (job) (streams_scrape_up == 0)`, "{{job}} down"},
					}},
				{title: "Newest scrape's age", unit: "s",
					question: "How old is each job's oldest newest scrape: has a target stopped arriving? (alert StreamsTargetScrapesStopped)",
					queries:  []query{{`max by (job) (time() - streams_scrape_timestamp_seconds)`, "{{job}}"}}},
				{title: "Targets up and down by publisher", unit: "none",
					question: "Which edge hosts have targets down, or scrapes the central side has not delivered (every state /targets shows)?",
					queries: []query{
						{`sum by (publisher, state) (prometheus_streams_drain_fleet_targets)`, "{{publisher}} {{state}}"},
					}},
				{title: "Failing targets", kind: list, unit: "none",
					question: "Which targets are down now (job, instance)? Their reasons are on the drain's /targets page.",
					queries:  []query{{`streams_scrape_up == 0`, ""}}},
			},
		}, {
			title: "Scrapes",
			panels: []panel{
				{title: "Scrape duration, slowest per job", unit: "s",
					question: "How long do the edges take to scrape each job's slowest target?",
					queries:  []query{{`max by (job) (streams_scrape_duration_seconds)`, "{{job}}"}}},
				{title: "Samples per job", unit: "short",
					question: "How many samples does each job's scrapes carry (the size of what crosses the stream)?",
					queries:  []query{{`sum by (job) (streams_scrape_samples)`, "{{job}}"}}},
			},
		}, {
			title: "Publishers",
			panels: []panel{
				{title: "Last message from each publisher", unit: "s",
					question: "How long since each edge host's last message arrived: which site went quiet? (alert StreamsPublisherSilent)",
					queries:  []query{{`time() - max by (publisher) (prometheus_streams_drain_publisher_last_message_timestamp_seconds)`, "{{publisher}}"}}},
				{title: "scrape-once versions", kind: list, unit: "none",
					question: "Which version of scrape-once runs on each edge host: is the fleet upgraded?",
					queries:  []query{{`prometheus_streams_drain_publisher_build_info`, ""}}},
				{title: "Publisher clock offset", unit: "s",
					question: "Arrival minus scrape end of each edge host's last message: transit plus the edge clock's error. max_age, lag and expiry rest on it.",
					queries:  []query{{`max by (publisher) (prometheus_streams_drain_publisher_clock_offset_seconds)`, "{{publisher}}"}}},
			},
		}},
	},
}

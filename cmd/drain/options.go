package main

import (
	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/drain"
	"github.com/prometheus-streams/prometheus-streams/internal/version"
	"github.com/prometheus-streams/prometheus-streams/sink/pushgateway"
)

// pushGatewayOptions is the client of the config's push_gateway section.
func pushGatewayOptions(pg *config.PushGateway) pushgateway.Options {
	return pushgateway.Options{
		URL: pg.URL, HTTPClientConfig: pg.HTTPClientConfig, Timeout: pg.Timeout.D(), UserAgent: version.UserAgent(),
	}
}

// trustedKeys are the drain's trusted publisher keys, from the config's trust section.
func trustedKeys(trust []*config.TrustedPublisher) []*drain.TrustedKey {
	keys := make([]*drain.TrustedKey, len(trust))
	for i, p := range trust {
		if p == nil {
			continue // NewTrust names the empty entry
		}
		keys[i] = &drain.TrustedKey{
			PublicKey: p.PublicKey, Jobs: p.Jobs, Instances: p.Instances,
			Publishers: p.Publishers, Sites: p.Sites, Labels: p.Labels,
		}
	}
	return keys
}

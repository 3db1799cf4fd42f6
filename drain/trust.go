package drain

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// Reasons Trust rejects a message for, as counted in messages_rejected_total. A bad
// signature (the envelope package's ErrBadSignature) is counted as reasonBadSignature
// whether or not trust is configured.
const (
	reasonUnsigned     = "unsigned"
	reasonUnknownKey   = "unknown_key"
	reasonBadSignature = "bad_signature"
	reasonNotAllowed   = "not_allowed"
)

// Trust is the drain's list of the publisher keys it accepts and what each may
// publish, from the config's trust section. With a Trust, a message is delivered only
// if it is signed (envelope.Decode verified the signature), by a listed key, for one of
// that key's jobs and, when the key lists instance patterns, an instance one of them
// matches. A nil *Trust accepts every message that decodes.
type Trust struct {
	keys map[string]*allowance
}

// allowance is what one key may publish.
type allowance struct {
	jobs       map[string]bool
	instances  []*regexp.Regexp // anchored; none: any instance
	publishers []string         // none: any
	sites      []string         // none: any
	labels     map[string]string
}

// TrustedKey is one publisher key the drain accepts and what it may publish: an entry
// of the config's trust section.
type TrustedKey struct {
	// PublicKey is the NKey public key (U...) of the publisher's seed.
	PublicKey string
	// Jobs the key may publish; at least one.
	Jobs []string
	// Instances, when set, are regular expressions (anchored) one of which each
	// instance the key publishes must match.
	Instances []string
	// Publishers, when set, are the publisher identities the key may publish as; Sites
	// likewise the site labels.
	Publishers []string
	Sites      []string
	// Labels, when set, are static labels every message of the key must carry with
	// exactly these values.
	Labels map[string]string
}

// NewTrust builds a Trust from the keys of the config's trust section. It returns nil,
// trusting everything, when there is none.
func NewTrust(publishers []*TrustedKey) (*Trust, error) {
	if len(publishers) == 0 {
		return nil, nil
	}
	t := &Trust{keys: make(map[string]*allowance, len(publishers))}
	for i, p := range publishers {
		if p == nil {
			return nil, fmt.Errorf("trust[%d]: empty entry", i)
		}
		if !nkeys.IsValidPublicUserKey(p.PublicKey) {
			return nil, fmt.Errorf("trust[%d].public_key: not an NKey user public key (U...)", i)
		}
		if _, dup := t.keys[p.PublicKey]; dup {
			return nil, fmt.Errorf("trust[%d].public_key: listed twice", i)
		}
		if len(p.Jobs) == 0 {
			return nil, fmt.Errorf("trust[%d].jobs: required", i)
		}
		a := &allowance{jobs: make(map[string]bool, len(p.Jobs))}
		for _, j := range p.Jobs {
			a.jobs[j] = true
		}
		for j, re := range p.Instances {
			r, err := regexp.Compile("^(?:" + re + ")$")
			if err != nil {
				return nil, fmt.Errorf("trust[%d].instances[%d]: %w", i, j, err)
			}
			a.instances = append(a.instances, r)
		}
		a.publishers, a.sites, a.labels = slices.Clone(p.Publishers), slices.Clone(p.Sites), p.Labels
		t.keys[p.PublicKey] = a
	}
	return t, nil
}

// Keys is how many publisher keys t trusts.
func (t *Trust) Keys() int {
	if t == nil {
		return 0
	}
	return len(t.keys)
}

// Check decides whether env, as decoded, may be delivered: it returns "" if so, else
// the rejection reason and what exactly is wrong.
func (t *Trust) Check(env *envelope.Envelope) (reason, why string) {
	if t == nil {
		return "", ""
	}
	if env.Signer == "" {
		return reasonUnsigned, "the message is not signed and this drain accepts signed messages only"
	}
	a := t.keys[env.Signer]
	if a == nil {
		return reasonUnknownKey, "the message is signed by a key this drain does not trust"
	}
	if !a.jobs[env.Job] {
		return reasonNotAllowed, fmt.Sprintf("the key may publish jobs %s only", a.jobList())
	}
	if len(a.instances) > 0 && !a.instance(env.Instance) {
		return reasonNotAllowed, fmt.Sprintf("the key may publish instances matching %s only", a.instanceList())
	}
	if len(a.publishers) > 0 && !slices.Contains(a.publishers, env.Publisher) {
		return reasonNotAllowed, fmt.Sprintf("the key may publish as publishers %s only", quoted(a.publishers))
	}
	if len(a.sites) > 0 && !slices.Contains(a.sites, env.Site) {
		return reasonNotAllowed, fmt.Sprintf("the key may publish for sites %s only", quoted(a.sites))
	}
	for name, want := range a.labels {
		if got, ok := staticLabel(env, name); !ok || got != want {
			return reasonNotAllowed, fmt.Sprintf("the key's messages must carry the static label %s=%q", name, want)
		}
	}
	return "", ""
}

// staticLabel is the value of env's static label name.
func staticLabel(env *envelope.Envelope, name string) (string, bool) {
	for _, l := range env.Labels {
		if l.Name == name {
			return l.Value, true
		}
	}
	return "", false
}

func quoted(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func (a *allowance) instance(s string) bool {
	for _, r := range a.instances {
		if r.MatchString(s) {
			return true
		}
	}
	return false
}

func (a *allowance) jobList() string {
	jobs := make([]string, 0, len(a.jobs))
	for j := range a.jobs {
		jobs = append(jobs, fmt.Sprintf("%q", j))
	}
	slices.Sort(jobs)
	return strings.Join(jobs, ", ")
}

func (a *allowance) instanceList() string {
	res := make([]string, len(a.instances))
	for i, r := range a.instances {
		res[i] = fmt.Sprintf("%q", r.String())
	}
	return strings.Join(res, ", ")
}

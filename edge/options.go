package edge

import (
	"time"

	"github.com/prometheus-streams/prometheus-streams/edge/scrape"
)

// Options are what a run is told: who publishes, within what time, and which jobs it
// may scrape. scrape-once maps its config onto them once.
type Options struct {
	// Identity is the publisher every envelope names; the stream client's ID carries it
	// too.
	Identity string
	Site     string
	// RunTimeout bounds a run: its scrapes, publishes and acks together.
	RunTimeout time.Duration
	// ScrapeConcurrency is how many scrapes run at once; 0: all of them.
	ScrapeConcurrency int
	// Jobs are the jobs Select chooses from, in the order it lists them.
	Jobs []*Job
}

// Job is a job as a run scrapes it: how the scraper scrapes its targets, and what its
// envelopes say beyond the scrape.
type Job struct {
	scrape.Job
	// HonorLabels tells the drain that a scraped label wins over a static one of the
	// same name.
	HonorLabels bool
	Targets     []scrape.Target
}

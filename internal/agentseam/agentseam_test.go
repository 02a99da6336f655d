package agentseam

import (
	"testing"

	"agentflow/store"
)

// source is a store that supplies probes, as a harness's store does.
type source struct {
	store.Store
	give  bool
	given *Probe
}

func (s *source) AgentProbe(classes func() []string) *Probe {
	if !s.give {
		return nil
	}
	s.given = NewProbe(classes)
	return s.given
}

func TestProbeFor(t *testing.T) {
	classes := func() []string { return []string{"A"} }
	src := &source{give: true}
	if p := ProbeFor(src, classes); p == nil || p != src.given {
		t.Errorf("ProbeFor over a ProbeSource = %p, want its probe %p", p, src.given)
	}
	if p := ProbeFor(&source{}, classes); p == nil || p.Classes()[0] != "A" {
		t.Errorf("ProbeFor over a ProbeSource that gives none = %v, want a new probe", p)
	}
	var plain store.Store
	if p := ProbeFor(plain, classes); p == nil || p.Classes()[0] != "A" {
		t.Errorf("ProbeFor over a plain store = %v, want a new probe", p)
	}
}

package status

import (
	"strings"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// The exposition of a report passes the strict parser and carries its
// counters, with labels where natural.
func TestWritePrometheus(t *testing.T) {
	r := sample()
	r.Programs = []Program{{Name: "ssl_write", Missed: 3}, {Name: "sched_exec"}}
	r.Version = `1.0 "quoted" \ back`
	r.Egress = &Egress{Attached: true, Policies: []EgressPolicy{{Name: "e"}}, Counters: []EgressCounters{{Hook: "connect4", Allowed: 7, Blocked: 2}}, Lost: 1}
	var b strings.Builder
	if err := WritePrometheus(&b, r); err != nil {
		t.Fatal(err)
	}
	e, err := testenv.ParseExposition(b.String())
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	for series, want := range map[string]float64{
		"aarsm_events_lost_total":                                           2,
		"aarsm_events_seen_total":                                           10,
		"aarsm_holds_total":                                                 3,
		`aarsm_verdicts_total{decision="block"}`:                            1,
		`aarsm_verdicts_total{decision="alert"}`:                            1,
		"aarsm_messages_judged_total":                                       3,
		`aarsm_program_missed_total{program="ssl_write"}`:                   3,
		`aarsm_program_missed_total{program="sched_exec"}`:                  0,
		`aarsm_probed_files{state="attached"}`:                              1,
		`aarsm_probed_files{state="failed"}`:                                1,
		`aarsm_policies{mode="monitor"}`:                                    1,
		`aarsm_fail_kills_total`:                                            5,
		`aarsm_hold_deadline_resolutions_total{outcome="resumed"}`:          4,
		"aarsm_reload_failed":                                               1,
		"aarsm_quarantined_cgroups":                                         1,
		`aarsm_egress_connections_total{hook="connect4",outcome="blocked"}`: 2,
		`aarsm_egress_connections_total{hook="connect4",outcome="allowed"}`: 7,
		"aarsm_egress_events_lost_total":                                    1,
		"aarsm_egress_policies":                                             1,
		"aarsm_component_egress_unavailable":                                0,
		`aarsm_info{version="1.0 \"quoted\" \\ back"}`:                      1,
	} {
		if got, ok := e.Value(series); !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	if e.Types["aarsm_events_lost_total"] != "counter" || e.Types["aarsm_holds_in_progress"] != "gauge" {
		t.Errorf("types %v", e.Types)
	}
}

// The strict parser refuses what the textfile collector or the format
// refuses.
func TestParseExpositionRefuses(t *testing.T) {
	ok := "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n"
	if _, err := testenv.ParseExposition(ok); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]string{
		"no final line feed": strings.TrimSuffix(ok, "\n"),
		"no TYPE":            "# HELP a_total A.\na_total 1\n",
		"no HELP":            "# TYPE a_total counter\na_total 1\n",
		"timestamp":          "# HELP a_total A.\n# TYPE a_total counter\na_total 1 1700000000\n",
		"duplicate":          ok + "a_total 2\n",
		"counter name":       "# HELP a A.\n# TYPE a counter\na 1\n",
		"negative counter":   "# HELP a_total A.\n# TYPE a_total counter\na_total -1\n",
		"bad escape":         "# HELP a A.\n# TYPE a gauge\na{l=\"\\x\"} 1\n",
		"unquoted":           "# HELP a A.\n# TYPE a gauge\na{l=x} 1\n",
		"bad value":          "# HELP a A.\n# TYPE a gauge\na one\n",
		"split family":       "# HELP a A.\n# TYPE a gauge\na{l=\"1\"} 1\n# HELP b B.\n# TYPE b gauge\nb 1\na{l=\"2\"} 1\n",
		"empty line":         ok + "\n",
		"other comment":      "# hello\n" + ok,
	} {
		if _, err := testenv.ParseExposition(bad); err == nil {
			t.Errorf("%s: accepted:\n%s", name, bad)
		}
	}
}

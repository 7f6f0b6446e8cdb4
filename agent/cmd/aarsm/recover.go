package main

import (
	"log/slog"
	"time"

	"github.com/aarsm/aarsm/agent/internal/act"
	"github.com/aarsm/aarsm/agent/internal/act/vault"
)

// reportRecovered logs the state files the agent found corrupt at start
// and moved aside (each named with where it went), and moves corrupt
// quarantined messages aside. The baseline reports its own (enforce).
func reportRecovered(log *slog.Logger, q *act.Quarantine, v *vault.Vault) {
	if q != nil {
		if err := q.Recovered(); err != nil {
			log.Error("the network quarantine's state file was corrupt: moved aside, started a fresh one from the pinned map", "err", err)
		}
	}
	if v == nil {
		return
	}
	moved, err := v.SetAsideCorrupt(time.Now())
	for _, c := range moved {
		log.Error("a quarantined message's file was corrupt: moved aside", "id", c.ID, "moved_to", c.To, "err", c.Err)
	}
	if err != nil {
		log.Warn("cannot check the quarantined messages", "err", err)
	}
}

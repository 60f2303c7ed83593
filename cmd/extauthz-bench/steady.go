package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/e2e"
)

// Steady is the Redis cost of the cache in steady state: extauthz with the
// cache under continuous gRPC load, alone, for several touch intervals.
//
// The table's rows take turns, so while the other rows run the cached
// replica is idle and its sessions' touches come due; they are all sent
// when its next row starts, and its Redis commands per check in the table
// count the touches of the whole cycle against the checks of its own
// stretch. Under continuous load each session in use costs about one touch
// (a GETEX) per touch interval, whatever the load: commands per check are
// then sessions / (interval × checks per second). This measures that.
type Steady struct {
	Protocol    string  `json:"protocol"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	Sessions    int     `json:"sessions"`
	Checks      int64   `json:"checks"`
	Errors      int64   `json:"errors"`
	PerSecond   float64 `json:"per_second"`
	// RedisCmds is every command Redis ran meanwhile but the bench's own
	// INFO calls: touches, reads, and the cache's heartbeat PUBLISHes.
	RedisCmds    float64 `json:"redis_commands"`
	RedisCmdsPer float64 `json:"redis_commands_per_check"`
	TargetMet    bool    `json:"target_met"`
}

// steady loads x (the replica with the cache) over gRPC at c for d, with
// every session of reqs in use, and counts Redis' commands.
func steady(ctx context.Context, rdb *redis.Client, x *e2e.Extauthz, reqs [][]byte, c int, d time.Duration) (*Steady, error) {
	conns, err := dialConns(x.GRPCAddr, c)
	if err != nil {
		return nil, err
	}
	defer closeAll(conns)
	cmds0, err := allCommands(ctx, rdb)
	if err != nil {
		return nil, err
	}
	res := load(ctx, c, d, check(conns, reqs))
	cmds1, err := allCommands(ctx, rdb)
	if err != nil {
		return nil, err
	}
	s := &Steady{Protocol: "grpc", Concurrency: c, Seconds: d.Seconds(), Sessions: len(reqs), Checks: res.Ops, Errors: res.Errors,
		PerSecond: res.PerSecond, RedisCmds: cmds1 - cmds0}
	if res.Ops > 0 {
		s.RedisCmdsPer = s.RedisCmds / float64(res.Ops)
	}
	s.TargetMet = res.Ops > 0 && s.RedisCmdsPer <= targetRedisCmds
	return s, nil
}

// allCommands is the total of calls in INFO commandstats but INFO's own.
func allCommands(ctx context.Context, rdb *redis.Client) (float64, error) {
	return commandCount(ctx, rdb, "info")
}

func (s *Steady) print(w io.Writer) {
	m := "✗"
	if s.TargetMet {
		m = "✓"
	}
	fmt.Fprintf(w, "\nsteady state: extauthz + cache alone, %s at c=%d for %.0f s, all %d sessions in use: %.0f checks/s, "+
		"%.0f Redis commands (touches, heartbeats; all but INFO) = %.3f per check (target ≤ %.2f %s)\n",
		s.Protocol, s.Concurrency, s.Seconds, s.Sessions, s.PerSecond, s.RedisCmds, s.RedisCmdsPer, targetRedisCmds, m)
}

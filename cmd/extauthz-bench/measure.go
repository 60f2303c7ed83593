package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// cpuTime is user+system CPU time of a process (all its threads), from
// /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100, nil // USER_HZ is 100 on Linux
}

func peakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, errors.New("no VmHWM")
}

// mallocs reads go_memstats_mallocs_total from a Prometheus /metrics URL
// (extauthz's admin listener, the no-op server's, oauth2-proxy's).
func mallocs(url string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "go_memstats_mallocs_total "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, errors.New("no go_memstats_mallocs_total")
}

// redisCommands is the total of calls in INFO commandstats, without the
// readiness PINGs, the INFO calls of the measurement itself, and PUBLISH:
// the session cache's heartbeats (about 4 a second per replica, whatever the
// load, and from every cached replica while any row runs) are a fixed cost,
// not a per-check one; invalidations only come with logouts and refreshes.
func redisCommands(ctx context.Context, rdb *redis.Client) (float64, error) {
	return commandCount(ctx, rdb, "ping", "info", "publish")
}

// commandCount is the total of calls in INFO commandstats but those of the
// commands named in without.
func commandCount(ctx context.Context, rdb *redis.Client, without ...string) (float64, error) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return 0, err
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
		if !ok || !strings.HasPrefix(line, "cmdstat_") || slices.Contains(without, name) {
			continue
		}
		_, rest, _ = strings.Cut(rest, "calls=")
		n, _, _ := strings.Cut(rest, ",")
		v, _ := strconv.ParseFloat(n, 64)
		total += v
	}
	return total, nil
}

func numCPU() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "processor\t:")
}

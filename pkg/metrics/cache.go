package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/extauthz/extauthz/pkg/session"
)

// WatchSessionCache exports the session cache's counters, read at each
// scrape: requests by result (hit, miss, stale — the hit ratio is
// hit / all), invalidations, evictions, touches, publish errors, size, and
// whether the invalidation channel vouches for entries.
func (m *Metrics) WatchSessionCache(stats func() session.CacheStats) {
	m.registry.MustRegister(cacheCollector{stats})
}

var (
	cacheRequests = prometheus.NewDesc("extauthz_session_cache_requests_total",
		"Session loads by cache result: hit (served from memory), miss (read from Redis), stale (in memory but too old to vouch for: read again).", []string{"result"}, nil)
	cacheInvalidations = prometheus.NewDesc("extauthz_session_cache_invalidations_total",
		"Invalidations received from other replicas (logouts, refreshes, deletions).", nil, nil)
	cacheEvictions = prometheus.NewDesc("extauthz_session_cache_evictions_total",
		"Sessions dropped to stay within the cache's bounds.", nil, nil)
	cacheTouches = prometheus.NewDesc("extauthz_session_cache_touches_total",
		"Batched extensions of the idle expiry in Redis, by result.", []string{"result"}, nil)
	cachePublishErrors = prometheus.NewDesc("extauthz_session_cache_publish_errors_total",
		"Invalidations this replica could not publish at once (retried).", nil, nil)
	cacheEntries = prometheus.NewDesc("extauthz_session_cache_entries", "Sessions held in the cache.", nil, nil)
	cacheBytes   = prometheus.NewDesc("extauthz_session_cache_bytes", "Bytes held in the cache (estimated).", nil, nil)
	cacheChannel = prometheus.NewDesc("extauthz_session_cache_channel_up",
		"1 while the invalidation channel vouches for cached sessions; 0: nothing older than the staleness bound is served.", nil, nil)
)

type cacheCollector struct{ stats func() session.CacheStats }

func (cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{cacheRequests, cacheInvalidations, cacheEvictions, cacheTouches, cachePublishErrors, cacheEntries, cacheBytes, cacheChannel} {
		ch <- d
	}
}

func (c cacheCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(cacheRequests, s.Hits, "hit")
	counter(cacheRequests, s.Misses, "miss")
	counter(cacheRequests, s.Stale, "stale")
	counter(cacheInvalidations, s.Invalidations)
	counter(cacheEvictions, s.Evictions)
	counter(cacheTouches, s.Touches-min(s.TouchErrors, s.Touches), "ok")
	counter(cacheTouches, s.TouchErrors, "error")
	counter(cachePublishErrors, s.PublishErrors)
	up := 0.0
	if s.ChannelUp {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(cacheEntries, prometheus.GaugeValue, float64(s.Entries))
	ch <- prometheus.MustNewConstMetric(cacheBytes, prometheus.GaugeValue, float64(s.Bytes))
	ch <- prometheus.MustNewConstMetric(cacheChannel, prometheus.GaugeValue, up)
}

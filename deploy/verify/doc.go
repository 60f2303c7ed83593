// Package verify tests what deploy/ ships for operators and needs Helm's and
// Prometheus's own libraries for: the Helm chart (deploy/helm/extauthz), the
// Prometheus alerts (deploy/prometheus) and the Grafana dashboard
// (deploy/grafana). It is a module of its own so that those libraries stay
// out of extauthz's go.mod; `make test` runs it.
package verify

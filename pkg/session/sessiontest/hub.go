package sessiontest

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/extauthz/extauthz/pkg/session"
)

// Hub is an in-process invalidation channel for tests: the Peers of every
// Manager made with it deliver to each other at once. A peer can be cut off
// (Cut) to play a channel that is down without the replica knowing.
type Hub struct {
	mu    sync.Mutex
	peers []*HubPeer
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{} }

// Peer returns a new replica's end of the hub.
func (h *Hub) Peer() *HubPeer {
	p := &HubPeer{hub: h}
	h.mu.Lock()
	h.peers = append(h.peers, p)
	h.mu.Unlock()
	return p
}

// HubPeer is one replica's session.Peers on a Hub.
type HubPeer struct {
	hub *Hub

	mu        sync.Mutex
	l         session.PeerListener
	cut       bool // nothing is delivered to it, its heartbeats do not return
	published int
}

var _ session.Peers = (*HubPeer)(nil)

// ErrCut is what Publish returns from a peer that is cut off.
var ErrCut = errors.New("hub: peer cut off")

// Publish delivers key to every other running peer that is not cut off.
func (p *HubPeer) Publish(ctx context.Context, key string) error {
	p.mu.Lock()
	cut := p.cut
	p.published++
	p.mu.Unlock()
	if cut {
		return ErrCut
	}
	p.hub.mu.Lock()
	peers := append([]*HubPeer(nil), p.hub.peers...)
	p.hub.mu.Unlock()
	for _, q := range peers {
		if q == p {
			continue
		}
		q.mu.Lock()
		if q.l != nil && !q.cut {
			q.l.Invalidated(key)
		}
		q.mu.Unlock()
	}
	return nil
}

// Published counts the calls of Publish.
func (p *HubPeer) Published() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.published
}

// Run connects, then returns the peer's heartbeats until ctx ends.
func (p *HubPeer) Run(ctx context.Context, heartbeat time.Duration, l session.PeerListener) {
	p.mu.Lock()
	p.l = l
	if !p.cut {
		l.Connected()
	}
	p.mu.Unlock()
	t := time.NewTicker(heartbeat)
	defer t.Stop()
	for {
		sent := time.Now()
		p.mu.Lock()
		if !p.cut {
			l.HeartbeatReturned(sent)
		}
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			p.mu.Lock()
			p.l = nil
			p.mu.Unlock()
			return
		case <-t.C:
		}
	}
}

// Cut stops delivery to the peer and the return of its heartbeats, without
// telling it (a channel that hangs); with disconnect, it is told (a
// channel that broke).
func (p *HubPeer) Cut(disconnect bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	if disconnect && p.l != nil {
		p.l.Disconnected()
	}
}

// Restore ends a Cut: the peer is connected again (what was published
// meanwhile is lost, as with a real channel).
func (p *HubPeer) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
	if p.l != nil {
		p.l.Connected()
	}
}

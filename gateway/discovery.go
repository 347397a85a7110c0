package gateway

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// resolveLoop keeps the upstreams of the discovery: dns entry
// cfg.Upstreams[i] in step with its URL's host's addresses: it resolves
// the name at once and then every resolve_interval until ctx is done.
func (g *Gateway) resolveLoop(ctx context.Context, i int) {
	defer g.wg.Done()
	uc := g.cfg.Upstreams[i]
	t := time.NewTicker(uc.ResolveInterval)
	defer t.Stop()
	for {
		g.resolve(ctx, i)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// resolve looks up entry i's name once and updates its upstreams: an
// address new to the answer becomes an upstream that joins after its first
// passing active check; an upstream whose address left the answer drains
// (no new requests; those in flight finish) and is dropped, with its
// series, once its last request has ended; a draining one whose address
// comes back is taken back. A failed lookup changes nothing, except
// "no such host", which means no address.
func (g *Gateway) resolve(ctx context.Context, i int) {
	uc := g.cfg.Upstreams[i]
	base, err := url.Parse(uc.URL)
	if err != nil {
		return // ParseConfig checked it
	}
	lctx, cancel := context.WithTimeout(ctx, min(uc.ResolveInterval, g.cfg.Health.Timeout))
	addrs, err := g.opts.LookupNetIP(lctx, base.Hostname())
	cancel()
	if ctx.Err() != nil {
		return
	}
	if dnsErr, ok := errors.AsType[*net.DNSError](err); ok && dnsErr.IsNotFound {
		addrs, err = nil, nil
	}
	if err != nil {
		g.log.Warn("resolving upstream", "upstream", uc.Name, "host", base.Hostname(), "err", err)
		return
	}
	found := map[netip.Addr]bool{}
	for _, a := range addrs {
		found[a.Unmap().WithZone("")] = true
	}

	g.upsMu.Lock()
	defer g.upsMu.Unlock()
	old := g.Upstreams()
	ups := make([]*Upstream, 0, len(old)+len(found))
	for _, u := range old {
		if u.order != i {
			ups = append(ups, u)
			continue
		}
		switch {
		case found[u.addr]:
			delete(found, u.addr)
			if u.draining.Load() {
				u.setActive(false) // back after a passing check
				u.joined.Store(false)
				u.draining.Store(false)
				g.startHealth(u)
				g.log.Info("upstream is back in DNS", "upstream", u.cfg.Name)
			}
		case !u.draining.Load():
			u.draining.Store(true)
			u.stopHealth()
			g.log.Info("upstream left DNS: draining", "upstream", u.cfg.Name, "in_flight", u.inflight.Load())
		case u.inflight.Load() == 0:
			g.m.requests.DeletePartialMatch(prometheus.Labels{"upstream": u.cfg.Name})
			g.log.Info("upstream drained", "upstream", u.cfg.Name)
			continue
		}
		ups = append(ups, u)
	}
	for a := range found {
		c := uc
		c.Name = uc.Name + "/" + a.String()
		c.Discovery, c.ResolveInterval = DiscoveryNone, 0
		host := a.String()
		if a.Is6() {
			host = "[" + host + "]"
		}
		if port := base.Port(); port != "" {
			host += ":" + port
		}
		u := *base
		u.Host = host
		c.URL = strings.TrimSuffix(u.String(), "/")
		up := newUpstream(c, i, false)
		up.addr = a
		ups = append(ups, up)
		g.startHealth(up)
		g.log.Info("upstream found in DNS", "upstream", c.Name, "url", c.URL)
	}
	slices.SortStableFunc(ups, func(a, b *Upstream) int {
		if a.order != b.order {
			return a.order - b.order
		}
		return a.addr.Compare(b.addr)
	})
	g.ups.Store(&ups)
}

package idp

// Test-only views of a registry, kept out of the package's API.

// Len is the number of tenants held, proven or not.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proven.l.Len() + r.unproven.l.Len()
}

// Proven is the number of proven tenants held.
func (r *Registry) Proven() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proven.l.Len()
}

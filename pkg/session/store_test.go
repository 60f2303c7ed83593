package session_test

import (
	"testing"

	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/session/sessiontest"
)

func TestConformanceMemory(t *testing.T) {
	sessiontest.Run(t, func(t *testing.T) session.Store { return session.NewMemoryStore(nil) })
}

func TestIDPSessionsMemory(t *testing.T) {
	sessiontest.RunIDPSessions(t, func(t *testing.T) session.Store { return session.NewMemoryStore(nil) })
}

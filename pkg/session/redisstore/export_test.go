package redisstore

import "github.com/redis/go-redis/v9"

// Client is the underlying go-redis client, for the tests to look at what
// the store wrote.
func (s *Store) Client() redis.UniversalClient { return s.c }

// Package scheduler is part of specd; see docs/architecture.md.
package scheduler

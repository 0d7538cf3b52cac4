package policy

import (
	"fmt"
	"os"
	"path/filepath"
)

// LoadFile reads, parses and validates a policy file and the CIDR list files it
// names (paths relative to the policy file's directory). Validation errors come
// back as Errors.
func LoadFile(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	dir := filepath.Dir(path)
	return Parse(path, data, func(p string) ([]byte, error) {
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		return os.ReadFile(p)
	})
}

package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apiguard/apiguard/userspace/policy"
	"github.com/apiguard/apiguard/userspace/safefile"
	"golang.org/x/sys/unix"
)

// TestSecretFilesAreNeverEchoed: a policy may name any file as a credential.
// Only a file holding exactly one token is read; every refusal names the
// file and never a byte of it.
func TestSecretFilesAreNeverEchoed(t *testing.T) {
	dir := t.TempDir()
	const secret = "s3cr3t-bouncer-key"
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("key", secret+"\n")
	if v, err := readSecret(policy.Secret{File: good}, "CrowdSec bouncer key"); err != nil || v != secret {
		t.Fatalf("good key file: %q, %v", v, err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want string
	}{
		{write("shadow", "root:"+secret+":19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"), "holds more than one line"},
		{write("conf", "api_key = "+secret+"\n"), "holds a space"},
		{"/proc/self/environ", "is on procfs"},
		{fifo, "is a FIFO"},
		{"/dev/zero", "is a character device"},
		{write("big", strings.Repeat(secret, 1000)), "over the limit of 4 KiB"},
	} {
		_, err := readSecret(policy.Secret{File: tc.path}, "CrowdSec bouncer key")
		if err == nil || !strings.Contains(err.Error(), "read the CrowdSec bouncer key: "+tc.path) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.path, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "root:")) {
			t.Errorf("%s: the error quotes the file: %v", tc.path, err)
		}
	}

	// the machine credentials file: yaml's own message would quote the value
	creds := write("creds.yaml", "login: [\""+secret+"\"]\npassword: x\n")
	_, _, err := machineCredentials(policy.CrowdSecReport{CredentialsFile: creds})
	if err == nil || strings.Contains(err.Error(), "s3cr3t") || !strings.Contains(err.Error(), "is not a credentials file as cscli writes it") {
		t.Errorf("bad credentials file: %v", err)
	}
	_, _, err = machineCredentials(policy.CrowdSecReport{CredentialsFile: "/proc/self/environ"})
	if !errors.Is(err, safefile.ErrKernelFile) {
		t.Errorf("environ as credentials: %v", err)
	}
}

package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"
)

// ErrNotRunning means nothing answers on the control socket.
var ErrNotRunning = errors.New("apiguard daemon is not running")

// ErrPermission means the caller may not use the control socket.
var ErrPermission = errors.New("permission denied")

// APIError is an error answer from the daemon.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return e.Message }

// Client calls a daemon's control API.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the daemon listening on socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:    1,
		IdleConnTimeout: 10 * time.Second,
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// Socket is the path this client connects to.
func (c *Client) Socket() string { return c.socket }

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Status returns the daemon's state.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	return &st, c.do(ctx, http.MethodGet, PathStatus, nil, nil, &st)
}

// Policy returns the policy in force.
func (c *Client) Policy(ctx context.Context) (*PolicyInfo, error) {
	var p PolicyInfo
	return &p, c.do(ctx, http.MethodGet, PathPolicy, nil, nil, &p)
}

// ApplyPolicy makes up the policy in force. A refused policy is a *PolicyError.
func (c *Client) ApplyPolicy(ctx context.Context, up *PolicyUpload) (*ApplyResult, error) {
	var res ApplyResult
	return &res, c.do(ctx, http.MethodPut, PathPolicy, nil, up, &res)
}

// DiffPolicy says what applying up would change. A bad policy is a *PolicyError.
func (c *Client) DiffPolicy(ctx context.Context, up *PolicyUpload) (*DiffResult, error) {
	var res DiffResult
	return &res, c.do(ctx, http.MethodPost, PathPolicyDiff, nil, up, &res)
}

// ConfirmPolicy keeps the policy on trial (policy apply --confirm).
func (c *Client) ConfirmPolicy(ctx context.Context) (*ConfirmResult, error) {
	var res ConfirmResult
	return &res, c.do(ctx, http.MethodPost, PathPolicyConfirm, nil, struct{}{}, &res)
}

// Bans lists the bans in force.
func (c *Client) Bans(ctx context.Context) ([]Ban, error) {
	var bans []Ban
	return bans, c.do(ctx, http.MethodGet, PathBans, nil, nil, &bans)
}

// AddBan bans an address or CIDR.
func (c *Client) AddBan(ctx context.Context, req BanRequest) (*Ban, error) {
	var b Ban
	return &b, c.do(ctx, http.MethodPost, PathBans, nil, req, &b)
}

// RemoveBan lifts the ban on exactly prefix (an address or CIDR).
func (c *Client) RemoveBan(ctx context.Context, prefix string) error {
	return c.do(ctx, http.MethodDelete, PathBans, url.Values{"prefix": {prefix}}, nil, nil)
}

// TopClients returns the n busiest clients by the given key, over every
// service or over one ("" for all).
func (c *Client) TopClients(ctx context.Context, n int, by SortKey, service string) (*TopClients, error) {
	var top TopClients
	q := url.Values{"n": {strconv.Itoa(n)}, "by": {string(by)}}
	if service != "" {
		q.Set("service", service)
	}
	return &top, c.do(ctx, http.MethodGet, PathClientsTop, q, nil, &top)
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(data)
	}
	// the host is a placeholder: the transport always dials the socket
	u := url.URL{Scheme: "http", Host: "apiguard", Path: path, RawQuery: q.Encode()}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.connError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("read answer to %s %s: %w", method, path, err)
	}
	return nil
}

// connError turns dial failures into messages that say what to do.
func (c *Client) connError(err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%w (no socket at %s)", ErrNotRunning, c.socket)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w (nothing listens on %s)", ErrNotRunning, c.socket)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("%w: cannot open %s: the apiguard control socket is for root only (try sudo)", ErrPermission, c.socket)
	}
	return fmt.Errorf("talk to apiguard daemon at %s: %w", c.socket, err)
}

// refusedError is the daemon's refusal of the caller; it is an ErrPermission.
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }
func (e *refusedError) Unwrap() error { return ErrPermission }

func decodeError(resp *http.Response) error {
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("daemon answered %s and the body could not be read: %w", resp.Status, err)
	}
	var eb ErrorBody
	if err := json.Unmarshal(data, &eb); err != nil || eb.Error == "" {
		return &APIError{Status: resp.StatusCode, Message: fmt.Sprintf("daemon answered %s", resp.Status)}
	}
	switch resp.StatusCode {
	case http.StatusUnprocessableEntity:
		if len(eb.Problems) > 0 {
			return &PolicyError{Problems: eb.Problems}
		}
	case http.StatusForbidden:
		return &refusedError{msg: eb.Error}
	}
	return &APIError{Status: resp.StatusCode, Message: eb.Error}
}

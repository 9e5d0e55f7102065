package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/moemesh/moemesh/proto"
)

const authModel = "Qwen3-30B-A3B"

// authPasswords are test passwords; one holds the characters the config quoting must
// escape.
func authPasswords() map[Role]Secret {
	return map[Role]Secret{
		RoleGateway: "gw-secret",
		RoleRouter:  `r"quoted\pass`,
		RoleExpertd: "ex-secret $X",
		RoleAdmin:   "admin-secret",
	}
}

// startAuthServer renders cfg as a config file, loads it the way nats-server does and runs
// an embedded server with JetStream from it; it also checks that the file and ApplyTo give
// the server the same users.
func startAuthServer(t *testing.T, cfg *AuthConfig) string {
	t.Helper()
	var buf bytes.Buffer
	if err := cfg.WriteAuthConfig(&buf); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "auth.conf")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("generated config does not load: %v\n%s", err, buf.String())
	}
	var applied server.Options
	cfg.ApplyTo(&applied)
	if !reflect.DeepEqual(usersByName(opts.Users), usersByName(applied.Users)) {
		t.Fatalf("config file and ApplyTo differ:\nfile:  %+v\napply: %+v", usersByName(opts.Users), usersByName(applied.Users))
	}
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.JetStream, opts.StoreDir = true, t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready within 10s")
	}
	return ns.ClientURL()
}

type userView struct {
	Password string
	Perms    server.Permissions
}

func usersByName(us []*server.User) map[string]userView {
	m := map[string]userView{}
	for _, u := range us {
		v := userView{Password: u.Password}
		if u.Permissions != nil {
			v.Perms = *u.Permissions
		}
		m[u.Username] = v
	}
	return m
}

// violations collects a connection's asynchronous errors.
type violations chan error

func (v violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	select {
	case v <- err:
	default:
	}
}

// wait returns once the server refused subject, or fails the test after 5 s.
func (v violations) wait(t *testing.T, subject string) {
	t.Helper()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	for {
		select {
		case err := <-v:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
				return
			}
		case <-timer.C:
			t.Fatalf("no permission violation for %q within 5s", subject)
		}
	}
}

// roleConn connects as role with its inbox prefix.
func roleConn(t *testing.T, url string, role Role) (*nats.Conn, violations) {
	t.Helper()
	v := make(violations, 64)
	nc := connect(t, url, nats.UserInfo(string(role), string(authPasswords()[role])),
		InboxOption(role), nats.ErrorHandler(v.handler))
	return nc, v
}

// clean fails the test if the server refused anything nc did: the -ERR of a refused
// command precedes the PONG of the flush.
func clean(t *testing.T, nc *nats.Conn) {
	t.Helper()
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := nc.LastError(); err != nil {
		t.Fatalf("%s: %v", nc.Opts.User, err)
	}
}

func TestAuthRolesDoTheirJobs(t *testing.T) {
	cfg, err := NewAuthConfig(authPasswords(), authModel)
	if err != nil {
		t.Fatal(err)
	}
	roleJobs(t, startAuthServer(t, cfg))
}

// roleJobs has each role do its whole job on the server at url.
func roleJobs(t *testing.T, url string) {
	gw, _ := roleConn(t, url, RoleGateway)
	rt, _ := roleConn(t, url, RoleRouter)
	ex, _ := roleConn(t, url, RoleExpertd)
	ctx := timeout(t, 30*time.Second)

	// expertd: opens the registry, serves a card, writes its lease, follows its assignment.
	exReg, err := OpenRegistry(ctx, ex, authModel, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	exSvc, err := AddService(ex, proto.ServiceExpertd, "0.0.1", "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = exSvc.Stop() })
	if err := exSvc.AddEndpoint("card-c0", micro.HandlerFunc(func(r micro.Request) {
		_ = r.Respond(append([]byte("expert:"), r.Data()...))
	}), micro.WithEndpointSubject(proto.CardSubject(authModel, "c0"))); err != nil {
		t.Fatal(err)
	}
	assigned := make(chan *proto.Assignment, 4)
	if err := exReg.WatchAssign(ctx, "c0", func(a *proto.Assignment) { assigned <- a }); err != nil {
		t.Fatal(err)
	}
	if err := exReg.PutCard(ctx, &proto.CardStatus{V: proto.Version, Card: "c0"}); err != nil {
		t.Fatal(err)
	}

	// router: watches leases, calls the card, assigns it (controller), leads, reports load,
	// serves generation requests and cancels.
	rtReg, err := OpenRegistry(ctx, rt, authModel, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 4)
	if err := rtReg.WatchCards(ctx, func(id string, st *proto.CardStatus) {
		if st != nil {
			seen <- id
		}
	}); err != nil {
		t.Fatal(err)
	}
	waitChan(t, seen, "c0")
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	reply, err := Request(rctx, rt, &nats.Msg{Subject: proto.CardSubject(authModel, "c0"), Data: []byte("batch")})
	if err != nil || string(reply.Data) != "expert:batch" {
		t.Fatalf("router -> expertd: %v %q", err, replyData(reply))
	}
	if err := rtReg.PutAssign(ctx, &proto.Assignment{V: proto.Version, Card: "c0", Leader: "r1"}); err != nil {
		t.Fatal(err)
	}
	if a := <-assigned; a == nil || a.Card != "c0" {
		t.Fatalf("expertd saw assignment %+v", a)
	}
	campaign(t, ctx, rtReg)

	loads := make(chan string, 1)
	if _, err := rt.Subscribe(proto.LoadSubject(authModel), func(m *nats.Msg) { loads <- string(m.Data) }); err != nil {
		t.Fatal(err)
	}
	cancels := make(chan string, 1)
	if _, err := rt.Subscribe(proto.CancelSubject(authModel, "r1"), func(m *nats.Msg) { cancels <- string(m.Data) }); err != nil {
		t.Fatal(err)
	}
	rtSvc, err := AddService(rt, proto.ServiceRouter, "0.0.1", "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rtSvc.Stop() })
	// The body stands in for GenerateRequest: the inbox token events go to.
	if err := rtSvc.AddEndpoint("gen", micro.HandlerFunc(func(r micro.Request) {
		if err := rt.Publish(string(r.Data()), []byte("token")); err != nil {
			t.Error(err)
		}
		_ = r.Respond([]byte("accepted"))
	}), micro.WithEndpointSubject(proto.GenSubject(authModel)), micro.WithEndpointQueueGroup(proto.QueueRouters)); err != nil {
		t.Fatal(err)
	}
	if err := rt.Publish(proto.LoadSubject(authModel), []byte("load")); err != nil {
		t.Fatal(err)
	}
	waitChan(t, loads, "load")
	clean(t, rt)

	// gateway: reads the registry, pings routers, submits a generation, reads its events
	// on its private inbox, cancels.
	gwReg, err := OpenRegistry(ctx, gw, authModel, 0)
	if err != nil {
		t.Fatal(err)
	}
	if cards, err := gwReg.Cards(ctx); err != nil || len(cards) != 1 {
		t.Fatalf("gateway reads cards: %v %v", cards, err)
	}
	if _, err := gw.RequestWithContext(rctx, "$SRV.PING."+proto.ServiceRouter, nil); err != nil {
		t.Fatalf("gateway pings routers: %v", err)
	}
	inbox := gw.NewInbox()
	if !strings.HasPrefix(inbox, InboxPrefix(RoleGateway)+".") {
		t.Fatalf("inbox %s", inbox)
	}
	events, err := gw.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	reply, err = Request(rctx, gw, &nats.Msg{Subject: proto.GenSubject(authModel), Data: []byte(inbox)})
	if err != nil || string(reply.Data) != "accepted" {
		t.Fatalf("gateway -> router: %v %q", err, replyData(reply))
	}
	if m, err := events.NextMsgWithContext(rctx); err != nil || string(m.Data) != "token" {
		t.Fatalf("token event: %v", err)
	}
	if err := gw.Publish(proto.CancelSubject(authModel, "r1"), []byte("g1")); err != nil {
		t.Fatal(err)
	}
	waitChan(t, cancels, "g1")
	for _, nc := range []*nats.Conn{gw, rt, ex} {
		clean(t, nc)
	}
}

// campaign wins the leader lease, then resigns by ending the campaign.
func campaign(t *testing.T, ctx context.Context, reg *Registry) {
	t.Helper()
	cctx, cancel := context.WithCancel(ctx)
	elected := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- reg.Campaign(cctx, "r1", 3*time.Second, func(lctx context.Context) {
			close(elected)
			<-lctx.Done()
		})
	}()
	select {
	case <-elected:
	case err := <-done:
		cancel()
		t.Fatalf("campaign ended: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("not elected within 10s")
	}
	if id, err := reg.Leader(ctx); err != nil || id != "r1" {
		t.Errorf("leader %q %v", id, err)
	}
	cancel()
	// Campaign may return nil here instead of ctx's error (hold's select sees lead return
	// as soon as ctx ends; reported): what matters for permissions is the resignation.
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("campaign returned %v", err)
	}
	if id, err := reg.Leader(ctx); err != nil || id != "" {
		t.Errorf("after resigning: leader %q %v", id, err)
	}
}

func waitChan(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no %q within 10s", want)
	}
}

func replyData(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return string(m.Data)
}

func TestAuthForbidden(t *testing.T) {
	cfg, err := NewAuthConfig(authPasswords(), authModel)
	if err != nil {
		t.Fatal(err)
	}
	url := startAuthServer(t, cfg)
	bucket := proto.Bucket(authModel)
	kv := "$KV." + bucket + "."
	card := proto.CardSubject(authModel, "c0")
	for _, tc := range []struct {
		role    Role
		sub     bool // subscribe, else publish
		subject string
		why     string
	}{
		{RoleGateway, false, card, "gateway must not reach experts"},
		{RoleGateway, false, proto.LoadSubject(authModel), "gateway must not fake load"},
		{RoleGateway, false, kv + "card.c0", "gateway must not forge leases"},
		{RoleGateway, false, kv + "assign.c0", "gateway must not assign"},
		{RoleGateway, false, proto.GenSubject("other"), "another model"},
		{RoleGateway, false, "$JS.API.STREAM.PURGE.KV_" + bucket, "gateway must not purge the registry"},
		{RoleGateway, false, "$JS.API.STREAM.CREATE.KV_" + bucket, "gateway binds to the registry, never creates it"},
		{RoleGateway, false, "$JS.API.STREAM.UPDATE.KV_" + bucket, "gateway must not reconfigure the registry"},
		{RoleGateway, true, proto.GenSubject(authModel), "gateway must not take requests"},
		{RoleGateway, true, InboxPrefix(RoleRouter) + ".>", "router's replies"},
		{RoleGateway, true, card, "gateway must not read batches"},
		{RoleExpertd, false, proto.GenSubject(authModel), "expertd must not submit"},
		{RoleExpertd, false, card, "expertd must not call other cards"},
		{RoleExpertd, false, kv + "assign.c0", "expertd must not assign itself"},
		{RoleExpertd, false, kv + proto.LeaderKey, "expertd must not lead"},
		{RoleExpertd, false, InboxPrefix(RoleGateway) + ".x", "expertd must not write to gateways"},
		{RoleExpertd, false, "$JS.API.STREAM.DELETE.KV_" + bucket, "expertd must not delete the registry"},
		{RoleExpertd, false, "$JS.API.STREAM.CREATE.KV_" + proto.Bucket("other"), "another model's bucket"},
		{RoleExpertd, true, proto.GenSubject(authModel), "expertd must not take requests"},
		{RoleExpertd, true, InboxPrefix(RoleGateway) + ".>", "gateway's replies"},
		{RoleExpertd, true, InboxPrefix(RoleRouter) + ".>", "router's replies"},
		{RoleExpertd, true, "_INBOX.>", "default inboxes"},
		{RoleExpertd, true, ">", "everything"},
		{RoleRouter, false, kv + "card.c0", "router must not forge leases"},
		{RoleRouter, false, proto.CardSubject("other", "c0"), "another model"},
		{RoleRouter, false, "$JS.API.STREAM.DELETE.KV_" + bucket, "router must not delete the registry"},
		{RoleRouter, false, "$JS.API.STREAM.CREATE.KV_" + bucket, "router binds to the registry, never creates it"},
		{RoleRouter, false, "$JS.API.STREAM.UPDATE.KV_" + bucket, "router must not reconfigure the registry"},
		{RoleRouter, true, card, "router must not serve cards"},
		{RoleRouter, true, InboxPrefix(RoleGateway) + ".>", "gateway's replies"},
		{RoleRouter, true, InboxPrefix(RoleExpertd) + ".>", "expertd's replies"},
		{RoleRouter, true, "$KV." + bucket + ".>", "raw registry"},
	} {
		op := "pub"
		if tc.sub {
			op = "sub"
		}
		t.Run(fmt.Sprintf("%s_%s_%s", tc.role, op, tc.subject), func(t *testing.T) {
			nc, v := roleConn(t, url, tc.role)
			if tc.sub {
				if _, err := nc.SubscribeSync(tc.subject); err != nil {
					t.Fatal(err)
				}
			} else if err := nc.Publish(tc.subject, []byte("x")); err != nil {
				t.Fatal(err)
			}
			v.wait(t, tc.subject)
		})
	}
}

// TestAuthReaderWaitsForBucket: a gateway or router (no right to create streams) opening
// the registry of a model no expertd has created yet waits for it until its deadline,
// then fails naming the bucket and the way out; one still waiting when an expertd
// creates the bucket binds to it.
func TestAuthReaderWaitsForBucket(t *testing.T) {
	cfg, err := NewAuthConfig(authPasswords(), authModel)
	if err != nil {
		t.Fatal(err)
	}
	url := startAuthServer(t, cfg)
	bucket := proto.Bucket(authModel)
	gw, _ := roleConn(t, url, RoleGateway)
	start := time.Now()
	_, err = OpenRegistry(timeout(t, time.Second), gw, authModel, 0)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), "registry bucket "+bucket+" does not exist yet: start an expertd") ||
		!strings.Contains(err.Error(), "$JS.API.STREAM.CREATE.KV_"+bucket) {
		t.Fatalf("gateway opening a missing registry: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("gave up after %v, deadline 1s", d)
	}
	t.Logf("%v", err)

	rt, _ := roleConn(t, url, RoleRouter)
	opened := make(chan error, 1)
	octx := timeout(t, 20*time.Second)
	go func() {
		reg, err := OpenRegistry(octx, rt, authModel, 0)
		if err == nil && reg.Bucket() != bucket {
			err = fmt.Errorf("bound to %s", reg.Bucket())
		}
		opened <- err
	}()
	// The router has tried to create the bucket and been refused: it is waiting.
	waitFor(t, 10*time.Second, func() error {
		if err := rt.LastError(); err == nil || !strings.Contains(err.Error(), "STREAM.CREATE.KV_"+bucket) {
			return fmt.Errorf("router's last error %v", err)
		}
		return nil
	})
	ex, _ := roleConn(t, url, RoleExpertd)
	if _, err := OpenRegistry(timeout(t, 5*time.Second), ex, authModel, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-opened:
		if err != nil {
			t.Fatalf("router waiting for the bucket: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("router did not bind to the bucket within 15s of its creation")
	}
	clean(t, ex)
}

func TestAuthAdminAndWildcard(t *testing.T) {
	cfg, err := NewAuthConfig(authPasswords()) // every model
	if err != nil {
		t.Fatal(err)
	}
	url := startAuthServer(t, cfg)
	admin, _ := roleConn(t, url, RoleAdmin)
	got := make(chan string, 1)
	if _, err := admin.Subscribe(InboxPrefix(RoleGateway)+".>", func(m *nats.Msg) { got <- string(m.Data) }); err != nil {
		t.Fatal(err)
	}
	clean(t, admin)
	// A router of any model may send a gateway its events, and the admin sees everything.
	rt, _ := roleConn(t, url, RoleRouter)
	if err := rt.Publish(InboxPrefix(RoleGateway)+".abc", []byte("ev")); err != nil {
		t.Fatal(err)
	}
	waitChan(t, got, "ev")
	ctx := timeout(t, 10*time.Second)
	for _, m := range []string{"m1", "org/m2.v2"} {
		ex, _ := roleConn(t, url, RoleExpertd)
		reg, err := OpenRegistry(ctx, ex, m, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := reg.PutCard(ctx, &proto.CardStatus{V: proto.Version, Card: "c0"}); err != nil {
			t.Fatalf("model %s: %v", m, err)
		}
		if _, err := ex.SubscribeSync(proto.CardSubject(m, "c0")); err != nil {
			t.Fatal(err)
		}
		clean(t, ex)
	}
	clean(t, rt)
}

func TestAuthConfigBadInput(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pw     map[Role]Secret
		models []string
	}{
		{"no roles", nil, nil},
		{"empty password", map[Role]Secret{RoleGateway: ""}, nil},
		{"trailing newline", map[Role]Secret{RoleGateway: "pw\n"}, nil},
		{"unknown role", map[Role]Secret{"janitor": "pw"}, nil},
		{"empty model", map[Role]Secret{RoleGateway: "pw"}, []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewAuthConfig(tc.pw, tc.models...); !errors.Is(err, ErrAuth) {
				t.Fatalf("err %v, want ErrAuth", err)
			}
		})
	}
	if _, err := PermissionsFor("janitor"); !errors.Is(err, ErrAuth) {
		t.Fatalf("unknown role: %v", err)
	}
}

func TestAuthSecretNeverPrints(t *testing.T) {
	cfg, err := NewAuthConfig(map[Role]Secret{RoleAdmin: "hunter2"})
	if err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("cfg", "user", cfg.Users[0], "pw", cfg.Users[0].Password)
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg.Users), fmt.Sprintf("%#v", cfg.Users), logBuf.String()} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("password printed: %s", s)
		}
	}
	var out bytes.Buffer
	if err := cfg.WriteAuthConfig(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"hunter2"`) {
		t.Errorf("config lacks the password:\n%s", out.String())
	}
}

// TestAuthPermissionsShape pins what each role may do without a server: the model
// selection and the role boundaries the server tests rely on.
func TestAuthPermissionsShape(t *testing.T) {
	for _, tc := range []struct {
		role             Role
		models           []string
		pub, sub, notPub []string
		responses        bool
	}{
		{RoleGateway, []string{"a"}, []string{"moe.v1.a.gen", "moe.v1.a.cancel.*", "$JS.API.STREAM.INFO.KV_moemesh_a"}, []string{"_INBOX_gateway.>"},
			[]string{"moe.v1.a.card.*", "$JS.API.STREAM.CREATE.KV_moemesh_a", "$JS.API.STREAM.UPDATE.KV_moemesh_a"}, false},
		{RoleRouter, []string{"a", "b"}, []string{"moe.v1.a.card.*", "moe.v1.b.card.*", "$KV.moemesh_b.assign.>", "$JS.API.STREAM.INFO.KV_moemesh_b"}, []string{"moe.v1.b.gen"},
			[]string{"$KV.moemesh_a.card.>", "$JS.API.STREAM.CREATE.KV_moemesh_b", "$JS.API.STREAM.UPDATE.KV_moemesh_b"}, true},
		{RoleExpertd, nil, []string{"$KV.*.card.>", "$JS.FC.*.>", "$JS.API.STREAM.CREATE.*", "$JS.API.STREAM.UPDATE.*"}, []string{"moe.v1.*.card.*"}, []string{"moe.v1.*.gen"}, true},
		{RoleAdmin, []string{"a"}, []string{">"}, []string{">"}, nil, false},
	} {
		t.Run(string(tc.role), func(t *testing.T) {
			p, err := PermissionsFor(tc.role, tc.models...)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.pub {
				if !slices.Contains(p.Publish, s) {
					t.Errorf("publish lacks %s: %v", s, p.Publish)
				}
			}
			for _, s := range tc.sub {
				if !slices.Contains(p.Subscribe, s) {
					t.Errorf("subscribe lacks %s: %v", s, p.Subscribe)
				}
			}
			for _, s := range tc.notPub {
				if slices.Contains(p.Publish, s) {
					t.Errorf("publish has %s", s)
				}
			}
			if p.AllowResponses != tc.responses {
				t.Errorf("allow_responses %v", p.AllowResponses)
			}
		})
	}
}

// TestAuthWatchFlowControl syncs a watch whose backlog is larger than the flow-control
// window of its ordered consumer (the server asks for a reply on $JS.FC past 1 MiB and
// stalls at 2 MiB): the role must be allowed to answer.
func TestAuthWatchFlowControl(t *testing.T) {
	cfg, err := NewAuthConfig(authPasswords(), authModel)
	if err != nil {
		t.Fatal(err)
	}
	url := startAuthServer(t, cfg)
	ctx := timeout(t, 20*time.Second)
	admin, _ := roleConn(t, url, RoleAdmin)
	adminReg, err := OpenRegistry(ctx, admin, authModel, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	const cards = 30
	big := strings.Repeat("d", 100<<10) // 30 leases of 100 KiB: 3 MiB of backlog
	for i := range cards {
		if err := adminReg.PutCard(ctx, &proto.CardStatus{V: proto.Version, Card: fmt.Sprintf("c%d", i), Daemon: big}); err != nil {
			t.Fatal(err)
		}
	}
	// The gateway has no allow_responses, which would also let a role answer the server's
	// flow-control request: it shows that $JS.FC itself is granted.
	for _, role := range []Role{RoleGateway, RoleRouter} {
		t.Run(string(role), func(t *testing.T) {
			nc, _ := roleConn(t, url, role)
			reg, err := OpenRegistry(ctx, nc, authModel, 0)
			if err != nil {
				t.Fatal(err)
			}
			seen := make(chan string, cards)
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := reg.WatchCards(wctx, func(id string, st *proto.CardStatus) {
				if st != nil {
					seen <- id
				}
			}); err != nil {
				t.Fatalf("watch of a 3 MiB backlog: %v", err)
			}
			got := map[string]bool{}
			for len(got) < cards {
				select {
				case id := <-seen:
					got[id] = true
				case <-wctx.Done():
					t.Fatalf("saw %d of %d leases", len(got), cards)
				}
			}
			clean(t, nc)
		})
	}
}

package mesh

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/moemesh/moemesh/proto"
)

// maxErrorDesc caps the error description header: headers count toward the payload, and a
// description is for humans.
const maxErrorDesc = 1024

// RespondError answers req with err as a service error: header proto.HeaderErrorCode is
// proto.CodeOf(err) in decimal, proto.HeaderError the description. The description omits
// the code's own text, which the receiver's proto.ParseError adds back, and is kept to one
// line of at most 1 KiB. A failure to send is not returned: the requester's deadline
// covers a lost reply.
//
// The message is micro's error response, sent with Respond rather than micro's Error:
// Error also records the error on the request for the endpoint's stats, which micro reads
// when the handler returns, and expertd answers from its card goroutines after that; the
// two raced (go test -race). So micro's error counts leave out these errors; the
// services' own metrics count them.
func RespondError(req micro.Request, err error) {
	if err == nil {
		err = errors.New("mesh: RespondError called without an error")
	}
	_ = req.Respond(nil, micro.WithHeaders(micro.Headers{
		proto.HeaderErrorCode: {strconv.Itoa(int(proto.CodeOf(err)))},
		proto.HeaderError:     {errorDesc(err)},
	}))
}

// errorDesc is err's message with a wrapped *proto.Error's "name (code): " prefix removed.
func errorDesc(err error) string {
	desc := err.Error()
	var pe *proto.Error
	if errors.As(err, &pe) {
		desc = strings.Replace(desc, pe.Error(), pe.Msg, 1)
	}
	desc = strings.Join(strings.Fields(desc), " ") // no CR/LF in a header value
	if len(desc) > maxErrorDesc {
		desc = strings.ToValidUTF8(desc[:maxErrorDesc-3], "") + "..."
	}
	if desc == "" {
		desc = proto.CodeOf(err).String() // micro refuses an empty description
	}
	return desc
}

// AddService registers a nats micro service (discovery, ping and stats under $SRV, so
// `nats micro ls` shows it). Endpoints are added by the caller; flush the connection after
// adding them and before advertising them, or callers may get no responders.
func AddService(nc *nats.Conn, name, version, description string, meta map[string]string) (micro.Service, error) {
	svc, err := micro.AddService(nc, micro.Config{
		Name:        name,
		Version:     version,
		Description: description,
		Metadata:    meta,
	})
	if err != nil {
		return nil, fmt.Errorf("mesh: micro service %s %s: %w", name, version, err)
	}
	return svc, nil
}

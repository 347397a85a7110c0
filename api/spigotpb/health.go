package spigotpb

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	spigotv1 "github.com/spigot-llm/spigot/api/spigotpb/spigot/v1"
)

// Health returns the standard health service for a server of
// spigot.v1.Generation, for the whole server ("") and for the
// Generation service: SERVING while serving reports true, else
// NOT_SERVING; other service names are unknown. Watch looks at serving
// every 100 ms and sends each change.
func Health(serving func() bool) grpc_health_v1.HealthServer { return &health{serving: serving} }

type health struct {
	grpc_health_v1.UnimplementedHealthServer
	serving func() bool
}

func (h *health) status(service string) (grpc_health_v1.HealthCheckResponse_ServingStatus, bool) {
	if service != "" && service != spigotv1.Generation_ServiceDesc.ServiceName {
		return grpc_health_v1.HealthCheckResponse_SERVICE_UNKNOWN, false
	}
	if !h.serving() {
		return grpc_health_v1.HealthCheckResponse_NOT_SERVING, true
	}
	return grpc_health_v1.HealthCheckResponse_SERVING, true
}

func (h *health) Check(ctx context.Context, req *grpc_health_v1.HealthCheckRequest) (*grpc_health_v1.HealthCheckResponse, error) {
	st, ok := h.status(req.GetService())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "unknown service %q", req.GetService())
	}
	return &grpc_health_v1.HealthCheckResponse{Status: st}, nil
}

func (h *health) Watch(req *grpc_health_v1.HealthCheckRequest, stream grpc_health_v1.Health_WatchServer) error {
	last := grpc_health_v1.HealthCheckResponse_ServingStatus(-1)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if st, _ := h.status(req.GetService()); st != last {
			if err := stream.Send(&grpc_health_v1.HealthCheckResponse{Status: st}); err != nil {
				return err
			}
			last = st
		}
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-tick.C:
		}
	}
}

"""The selective scan: public function and backend dispatch."""

from .naive import selective_scan_ref


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_final_state=False, seq_idx=None, backend="auto"):
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                              return_final_state, seq_idx)


__all__ = ["selective_scan", "selective_scan_ref"]

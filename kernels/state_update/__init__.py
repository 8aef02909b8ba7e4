"""The single-step (recurrent mode) update of the selective SSM."""

from .naive import selective_state_update_ref


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    return selective_state_update_ref(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)


__all__ = ["selective_state_update", "selective_state_update_ref"]

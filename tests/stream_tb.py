"""Amaranth-simulator testbench helpers for ``amaranth.lib.stream`` interfaces."""


async def send(ctx, stream, payloads):
    """Present each payload on ``stream`` until it is taken, then drop ``valid``.

    ``valid`` stays high between payloads and each payload holds until its transfer, as the
    stream rules ask.
    """
    for payload in payloads:
        ctx.set(stream.valid, 1)
        ctx.set(stream.payload, payload)
        await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)

"""A video encoder writes straight into the encryptor; a demuxer seeks in the decryptor."""

from __future__ import annotations

import io

import av
import numpy as np

from porchlight.age import HybridIdentity, decryptor, encryptor


def test_h264_fragmented_mp4_through_age(pq_identity: HybridIdentity) -> None:
    sealed = io.BytesIO()
    with encryptor(sealed, [pq_identity.recipient()]) as writer:
        container = av.open(
            writer, mode="w", format="mp4", options={"movflags": "frag_keyframe+empty_moov"}
        )
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for n in range(30):
            pixels = np.full((48, 64, 3), n * 8, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        container.close()
    assert b"ftyp" not in sealed.getvalue()  # nothing of the video is in the clear
    reader = decryptor(io.BytesIO(sealed.getvalue()), [pq_identity])
    assert reader.seekable()
    with av.open(reader, mode="r") as played:
        frames = [frame.to_ndarray(format="gray") for frame in played.decode(video=0)]
    assert len(frames) == 30
    assert abs(int(frames[-1].mean()) - int(frames[0].mean())) > 100

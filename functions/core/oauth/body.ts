/**
 * Reads a response body of at most `max` bytes. A larger one (declared by Content-Length, or found
 * while reading) is cancelled, and `tooLarge` gives the error to throw (`declared` when the header
 * said so). Shared by the OAuth client and the connect flow's discovery requests.
 */
export async function readBodyCapped(
  response: Response,
  max: number,
  tooLarge: (declared?: number) => Error,
): Promise<Buffer> {
  const declared = Number(response.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > max) {
    await response.body?.cancel().catch(() => {});
    throw tooLarge(declared);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (response.body) {
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > max) {
        await reader.cancel().catch(() => {});
        throw tooLarge();
      }
      chunks.push(value);
    }
  }
  return Buffer.concat(chunks);
}

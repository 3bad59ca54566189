import http2 from "node:http2";
import { statusOf, type WireRequest } from "./wire.ts";

/**
 * Sends the exact bytes a load generator will repeat, once, and returns the status they earn:
 * h2load counts any HTTP 200 as a success, and a gRPC error is an HTTP 200 too.
 */
export async function sendOnce(origin: string, request: WireRequest): Promise<string> {
  const session = http2.connect(origin);
  try {
    return await new Promise<string>((resolve, reject) => {
      session.once("error", reject);
      const stream = session.request({
        ":method": "POST",
        ":path": request.path,
        ...request.headers,
      });
      let httpStatus = 0;
      let headers: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders | undefined;
      const chunks: Buffer[] = [];
      stream.on("response", (h) => {
        headers = h;
        httpStatus = Number(h[":status"]);
      });
      stream.on("trailers", (t) => {
        trailers = t;
      });
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () =>
        resolve(
          statusOf(request.protocol, {
            httpStatus,
            headers,
            trailers,
            body: Buffer.concat(chunks),
          }),
        ),
      );
      stream.on("error", reject);
      stream.end(request.body);
    });
  } finally {
    session.close();
  }
}

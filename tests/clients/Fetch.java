// Java's own HTTP clients, as an agent would use them: GET each URL with HttpURLConnection and
// then with java.net.http.HttpClient, printing one status per request (or "error ..."). It is
// given no proxy and no trust store: only what JAVA_TOOL_OPTIONS says (`intentgate run` sets it).
// usage: java Fetch.java URL...
import java.net.HttpURLConnection;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

public class Fetch {
    public static void main(String[] args) throws Exception {
        HttpClient client = HttpClient.newHttpClient();
        for (String url : args) {
            try {
                HttpURLConnection c = (HttpURLConnection) URI.create(url).toURL().openConnection();
                System.out.println(c.getResponseCode());
                c.disconnect();
            } catch (Exception e) {
                System.out.println("error " + e);
            }
            try {
                HttpResponse<String> r = client.send(
                        HttpRequest.newBuilder(URI.create(url)).build(),
                        HttpResponse.BodyHandlers.ofString());
                System.out.println(r.statusCode());
            } catch (Exception e) {
                System.out.println("error " + e);
            }
        }
    }
}
